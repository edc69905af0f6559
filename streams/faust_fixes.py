"""Corrections to faust-streaming (0.15) that at-least-once delivery needs, in one place.

**Skipped messages were committed.** During a rebalance Faust suspends its flow control, and a
stream then *skips* the messages still buffered for it (or fetched under the previous consumer
generation) without handing them to the agent, and *acknowledges* them anyway ("otherwise the
lag would increase", faust/streams.py). The revocation's commit then includes those offsets, so
the partition's next owner starts after messages that nobody processed: a session's state
misses a run of weight packets ("weight packets 179..204 missing") and its checkout may never
come. Measured by the chaos suite: 3 of 22 checkouts lost in one run, ~25 consecutive packets
(one buffered batch) skipped each time.

The correction: an acknowledgement that arrives while the flow is suspended, or for a message
of an older generation, marks the message done (so the rebalance does not wait for it) but
does not make its offset committable. The message is delivered again after the rebalance,
from the last committed offset; every stage is idempotent, so a repeat changes nothing. The
cost is re-processing at most one buffer per partition per rebalance.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

_PATCHED = "_cartstream_never_commits_skipped"


def committable(app: Any, message: Any) -> bool:
    """May this acknowledgement move the committed offset? Not while a rebalance has the flow
    suspended, nor for a message fetched under an earlier consumer generation."""
    if not app.flow_control.is_active():
        return False
    generation = getattr(message, "generation_id", None)
    return generation is None or generation == app.consumer_generation_id


def never_commit_skipped_messages() -> None:
    """Install the correction on Faust's consumer (idempotent, once per process)."""
    from faust.transport import consumer as module

    consumer_cls = module.Consumer
    if getattr(consumer_cls.ack, _PATCHED, False):
        return
    original = consumer_cls.ack

    def ack(self: Any, message: Any) -> bool:
        if committable(self.app, message) and not _was_dropped(message):
            return bool(original(self, message))
        with module.ack_lock:
            if not message.acked:
                message.acked = True
                self._unacked_messages.discard(message)
                log.debug(
                    "not committing %s[%d]@%d: skipped during a rebalance; it is re-delivered",
                    message.topic,
                    message.partition,
                    message.offset,
                )
        return False

    setattr(ack, _PATCHED, True)
    consumer_cls.ack = ack  # type: ignore[method-assign]


def never_count_gaps() -> None:
    """Faust treats a jump in a partition's offsets as a gap to acknowledge (made for compacted
    topics and transaction markers, which cartstream's input topics never have). After a
    rebalance the chaos suite saw jumps of 30-60 records that nobody had processed, and the gap
    made them committed: lost. Here a gap is logged and never acknowledged; `InOrder` below
    makes the agent fetch the missing records again."""
    from faust.transport import consumer as module

    consumer_cls = module.Consumer
    original = consumer_cls._add_gap
    if getattr(original, _PATCHED, False):
        return

    async def add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        log.warning(
            "%s[%d]: offsets %d..%d were not delivered; not counting them as processed",
            tp.topic,
            tp.partition,
            offset_from,
            offset_to - 1,
        )

    setattr(add_gap, _PATCHED, True)
    consumer_cls._add_gap = add_gap  # type: ignore[method-assign]


def dropped(message: Any) -> None:
    """This delivery of `message` is thrown away unprocessed (it comes again): its
    acknowledgement must not make its offset committable."""
    _DROPPED[id(message)] = (message.topic, message.partition, message.offset)


_DROPPED: dict[int, tuple[str, int, int]] = {}


def _was_dropped(message: Any) -> bool:
    key = (message.topic, message.partition, message.offset)
    return _DROPPED.pop(id(message), None) == key


class InOrder:
    """Hands an agent each partition's records in offset order with none missing.

    Per partition it expects the next offset (from the consumer's committed offset after an
    assignment, then the last processed + 1). A record past the expected offset means records
    were not delivered: it is dropped (not committable) and the consumer is sought back to the
    expected offset. Faust's fetch loop can still move its read position past a seek while it
    finishes a fetched batch (and then drops the re-fetched records as old), so while a
    partition is behind, a watchdog seeks again every second until it has caught up, whether
    or not more records arrive. A record below the expected offset was processed already and is
    dropped too. Rebalances start afresh (`reset`)."""

    RESEEK_S = 1.0

    def __init__(self, app: Any, name: str) -> None:
        self.app, self.name = app, name
        self.expected: dict[Any, int] = {}
        self._behind: dict[Any, int] = {}  # partition -> the highest offset seen past a gap
        self._watchdog: asyncio.Task[None] | None = None

    def reset(self) -> None:
        self.expected.clear()
        self._behind.clear()

    async def admit(self, message: Any) -> bool:
        """True: process this record now. False: it was dropped (see the class doc)."""
        tp, offset = message.tp, message.offset
        want = self.expected.get(tp)
        if want is None:
            want = self.app.consumer._committed_offset.get(tp)
        if want is None:
            log.info(
                "%s: %s[%d] starts at offset %d (no committed offset known)",
                self.name,
                tp.topic,
                tp.partition,
                offset,
            )
        if want is None or offset == want:
            self.expected[tp] = offset + 1
            if self._behind.get(tp, -1) <= offset:
                self._behind.pop(tp, None)
            return True
        dropped(message)
        if offset < want:
            return False
        self.expected[tp] = want
        if tp not in self._behind:
            log.warning(
                "%s: %s[%d] delivered offset %d, expected %d: fetching %d..%d again",
                self.name,
                tp.topic,
                tp.partition,
                offset,
                want,
                want,
                offset - 1,
            )
            await self.app.consumer.seek(tp, want)
        self._behind[tp] = max(offset, self._behind.get(tp, -1))
        self._ensure_watchdog()
        return False

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        """While a partition is behind and makes no progress, seek it again every second."""
        progress: dict[Any, int] = {}
        while self._behind:
            await asyncio.sleep(self.RESEEK_S)
            for tp, high in list(self._behind.items()):
                want = self.expected.get(tp)
                if want is None or want > high:
                    self._behind.pop(tp, None)
                    continue
                if progress.get(tp) == want:
                    log.info(
                        "%s: %s[%d] still at %d: seeking again",
                        self.name,
                        tp.topic,
                        tp.partition,
                        want,
                    )
                    await self.app.consumer.seek(tp, want)
                progress[tp] = want
