"""Holes in a partition's log: offsets that hold no record and never will.

A Kafka log can skip offsets (compaction, transaction markers), and the embedded broker leaves
holes of its own: killed in the middle of a produce, Tansu on S3 storage had counted the
record's offset but never written its batch (`cart.frames[2]` offset 66 in a chaos run; the
cart's retry landed at 67). `InOrder` (in_order.py) treats a jump in a partition's offsets as
records lost on the way and fetches them again; for a hole that never ends, so the partition
(and every session on it) stopped for good.

`LogHoles` tells the two apart by asking the broker directly: a fetch at the offset the agent
waits for returns the first record the log holds from there on. A record that is still being
written (its offset counted, its batch not yet stored: two produces to one partition can finish
out of order) looks the same for a moment, so a hole counts only once the broker has said the
same for `CONFIRM_S`, longer than a produce request can stay in flight. Only then are its
offsets acknowledged (`faust_fixes.acknowledge_absent`) and the agent moves on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

log = logging.getLogger(__name__)

READ_UNCOMMITTED = 0
PROBE_BYTES = 64 * 1024  # at least one batch comes back whatever its size
PROBE_WAIT_MS = 500  # the records are there: only a slow broker needs it

# (consumer, partition, offset) -> the first offset the log holds at or past it (None: unknown)
FirstOffset = Callable[[Any, Any, int], Awaitable[int | None]]


async def _first_offset_from(client: Any, tp: Any, offset: int) -> int | None:
    """One Fetch at `offset` for partition `tp`: the offset of the first record returned at or
    past it; when none is returned while the high watermark is past `offset`, that watermark
    (the log holds nothing from `offset` to its end: a hole at its tail); None when the broker
    returned an error or the log ends at `offset`. `client`: aiokafka's client."""
    node = client.cluster.leader_for_partition(tp)
    if node is None or node < 0:
        return None
    partitions = [(tp.partition, offset, PROBE_BYTES)]
    request = FetchRequest(
        PROBE_WAIT_MS, 1, PROBE_BYTES, READ_UNCOMMITTED, [(tp.topic, partitions)]
    )
    response = await client.send(node, request)
    for _topic, answers in response.topics:
        for _partition, error_code, highwater, *data in answers:
            if error_code:
                return None
            if data[-1]:
                records = MemoryRecords(data[-1])
                while (batch := records.next_batch()) is not None:
                    for record in batch:
                        if record.offset >= offset:
                            return int(record.offset)
            return int(highwater) if highwater > offset else None
    return None


async def first_offset_in_log(consumer: Any, tp: Any, offset: int) -> int | None:
    """The first offset at or past `offset` that partition `tp` holds, asked of the broker in
    the consumer's own thread (`consumer`: Faust's consumer); None if it did not say."""
    try:
        thread = consumer._thread
        client = thread._ensure_consumer()._client
        first: int | None = await thread.call_thread(_first_offset_from, client, tp, offset)
        return first
    except Exception as exc:  # unknown this time: the caller asks again at its next check
        log.debug("%s[%d]: no answer about offset %d: %s", tp.topic, tp.partition, offset, exc)
        return None


class LogHoles:
    """Confirms holes in partitions' logs for one agent (see the module doc)."""

    CONFIRM_S = 45.0

    def __init__(
        self,
        first_offset: FirstOffset = first_offset_in_log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.first_offset = first_offset  # injectable: unit tests answer for the broker
        self.clock = clock
        # partition -> (the offset waited for, the first offset the log holds past it, since)
        self._suspected: dict[Any, tuple[int, int, float]] = {}

    def reset(self) -> None:
        self._suspected.clear()

    async def next_offset(self, consumer: Any, tp: Any, want: int) -> int:
        """`want`, or the first offset past a confirmed hole that starts at it."""
        first = await self.first_offset(consumer, tp, want)
        if first is None or first <= want:
            self._suspected.pop(tp, None)  # the record is there (or the broker did not say)
            return want
        now = self.clock()
        seen = self._suspected.get(tp)
        if seen is None or seen[:2] != (want, first):
            self._suspected[tp] = (want, first, now)
            log.info(
                "%s[%d]: the log holds no offset %d..%d yet; a hole if it stays so %.0f s",
                tp.topic,
                tp.partition,
                want,
                first - 1,
                self.CONFIRM_S,
            )
            return want
        if now - seen[2] < self.CONFIRM_S:
            return want
        del self._suspected[tp]
        log.warning(
            "%s[%d]: offsets %d..%d are not in the log (for %.0f s: a hole the broker left); "
            "going on at %d",
            tp.topic,
            tp.partition,
            want,
            first - 1,
            now - seen[2],
            first,
        )
        return first


class ChangelogTails:
    """A table's recovery reads its changelog partitions up to the end offsets it took when
    they were assigned, and waits for every one of those offsets to arrive. A hole at a
    changelog's tail (a broker that acknowledged a record it never stored, then crashed) never
    arrives: the recovery, and the worker with it, waited for good. Every `INTERVAL_S` during a
    recovery, each active changelog partition that has not moved since the last look is asked
    about (`LogHoles`, confirmed for `LogHoles.CONFIRM_S`); offsets the broker confirms are not
    in the log up to the end count as recovered. A hole followed by records needs nothing: the
    fetch goes on past it."""

    INTERVAL_S = 5.0

    def __init__(self, app: Any, holes: LogHoles | None = None) -> None:
        self.app = app
        self.holes = holes if holes is not None else LogHoles()
        self._last: dict[Any, int] = {}

    async def check(self) -> None:
        try:
            await self._check()
        except Exception:  # a safety net never takes the worker down (Faust crashes on it)
            log.exception("the changelog tail check failed; it runs again")

    async def _check(self) -> None:
        recovery = self.app.tables.recovery
        if not recovery.in_recovery:
            self._last.clear()
            self.holes.reset()
            return
        offsets, ends = recovery.active_offsets, recovery.active_highwaters
        for tp, last_offset in list(ends.items()):
            seen = offsets.get(tp)
            if last_offset is None or seen is None or seen >= last_offset:
                continue
            if self._last.get(tp) != seen:  # moving (or first seen): look again next time
                self._last[tp] = seen
                continue
            past = await self.holes.next_offset(self.app.consumer, tp, seen + 1)
            if past > last_offset:
                log.warning(
                    "%s[%d]: recovery stops at offset %d, not %d: the broker confirms the "
                    "rest is not in the log",
                    tp.topic,
                    tp.partition,
                    seen,
                    last_offset,
                )
                offsets[tp] = last_offset


def watch_changelog_tails(app: Any) -> ChangelogTails:
    """The app's one `ChangelogTails`, checked on a timer (made on first use)."""
    tails: ChangelogTails | None = getattr(app, "_cartstream_changelog_tails", None)
    if tails is None:
        tails = ChangelogTails(app)
        app._cartstream_changelog_tails = tails
        app.timer(interval=ChangelogTails.INTERVAL_S, name="changelog-tails")(tails.check)
    return tails
