"""Each agent takes its partitions' records in offset order, with none missing.

Faust can hand an agent a partition at the wrong position (after a rebalance its read position
and the group's committed offset can disagree: the chaos suite saw a partition start at 394
while the group had committed 424, and others start far past it), and its fetch loop can skip
a run of records. `InOrder` checks every record against the offset it expects next and fetches
missing ones again; `faust_fixes.never_commit_past_unprocessed` keeps the commits honest.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.types import TP

from cartstream.streams.faust_fixes import dropped

log = logging.getLogger(__name__)


async def start_offset(consumer: Any, tp: Any) -> int:
    """The offset a partition's processing starts at: the group's committed offset, as Faust
    knows it or else as the broker says; with none committed, the log's first offset. It is
    recorded as Faust's committed offset, which the commit guard needs."""
    key = TP(tp.topic, tp.partition)
    known = consumer._committed_offset.get(key)
    if known is not None:
        return int(known)
    thread = consumer._thread  # Faust keeps the aiokafka consumer in its consumer thread
    client = thread._ensure_consumer()
    committed = await thread.call_thread(client.committed, key)
    if committed is None:
        earliest = await consumer.earliest_offsets(key)
        committed = int(earliest.get(key) or 0)
    consumer._committed_offset[key] = committed
    return int(committed)


async def seek(consumer: Any, tp: Any, offset: int) -> bool:
    """Moves a partition's read position to `offset`, in the consumer's own thread.

    Faust's `Consumer.seek` calls aiokafka's from the app's thread while the consumer thread
    may be inside `Fetcher.fetched_records`; the fetcher is not thread-safe (the kill test saw
    the consumer thread crash on `KeyError` in `del self._records[tp]`). False: the partition
    is no longer assigned (a rebalance took it; its new owner starts at the committed offset).
    """
    thread = consumer._thread
    client = thread._ensure_consumer()
    key = TP(tp.topic, tp.partition)
    try:
        await thread.call_thread(client.seek, key, offset)
    except IllegalStateError:
        log.info("%s[%d] is no longer assigned: no seek to %d", tp.topic, tp.partition, offset)
        return False
    consumer._read_offset[key] = offset
    return True


class InOrder:
    """Hands an agent each partition's records in offset order with none missing.

    Per partition it expects the next offset (the committed offset after an assignment, see
    `start_offset`, then the last processed + 1). A record past the expected offset means records
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
            want = await start_offset(self.app.consumer, tp)
            if offset != want:
                log.info(
                    "%s: %s[%d] starts at offset %d, its committed offset is %d",
                    self.name,
                    tp.topic,
                    tp.partition,
                    offset,
                    want,
                )
        if offset == want:
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
            await seek(self.app.consumer, tp, want)
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
            if not self.app.flow_control.is_active():
                continue  # a rebalance: it resets this guard and seeks to the committed offsets
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
                    await seek(self.app.consumer, tp, want)
                progress[tp] = want
