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
import time
from collections.abc import Iterable
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.types import TP

from cartstream.streams.runtime.faust_compat.await_chain import await_chain
from cartstream.streams.runtime.faust_compat.faust_fixes import acknowledge_absent, dropped
from cartstream.streams.runtime.faust_compat.log_holes import LogHoles
from cartstream.streams.runtime.faust_compat.read_offsets import ReadOffsets

log = logging.getLogger(__name__)


COMMITTED_TIMEOUT_S = 10.0


async def _committed_within(client: Any, key: Any, timeout_s: float) -> int | None:
    # runs in the consumer thread, so a timeout there frees its method queue: aiokafka retries
    # a committed-offset fetch for ever, and two hung calls would stop all fetching
    return await asyncio.wait_for(client.committed(key), timeout_s)


async def start_offset(consumer: Any, tp: Any) -> int:
    """The offset a partition's processing starts at: the group's committed offset, as Faust
    knows it or else as the broker says; with none committed, the log's first offset. It is
    recorded as Faust's committed offset, which the commit guard needs. Raises
    `TimeoutError` when the broker does not say within `COMMITTED_TIMEOUT_S`."""
    key = TP(tp.topic, tp.partition)
    known = consumer._committed_offset.get(key)
    if known is not None:
        return int(known)
    thread = consumer._thread  # Faust keeps the aiokafka consumer in its consumer thread
    client = thread._ensure_consumer()
    committed = await thread.call_thread(_committed_within, client, key, COMMITTED_TIMEOUT_S)
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
    # Faust hands on only records at or past its read offset: the one before `offset`, held
    # there against records fetched before the seek (see read_offsets.py)
    offsets = consumer._read_offset
    if isinstance(offsets, ReadOffsets):
        offsets.seek(key, offset)
    else:
        offsets[key] = offset - 1 if offset > 0 else None
    return True


class InOrder:
    """Hands an agent each partition's records in offset order with none missing.

    Per partition it expects the next offset (the committed offset after an assignment, see
    `start_offset`, then the last processed + 1). A record past the expected offset means records
    were not delivered: it is dropped (not committable) and the consumer is sought back to the
    expected offset. A record below it was processed already: it is not processed again (see
    below for how it is acknowledged). Rebalances start afresh (`reset`).

    Several agents can read one topic (basket.changes goes to anomalies and reconcile), and a
    seek by one re-delivers the records to all of them. A record's offset is committable only
    when one delivery of it was processed by every agent that reads it, so a re-delivered
    record below an agent's expected offset (processed by this agent already) is acknowledged as
    processed, not dropped: otherwise each delivery is dropped by one agent or the other and the
    partition's committed offset never moves again (the CI chaos run saw basket.changes stay
    committed at 19 of 37 for three minutes, every checkout long persisted). That holds only for
    an agent that finishes a batch before it takes the next (`sequential`); a concurrent one
    (detect, `in_flight` > 1) may still be processing the first delivery, and drops the copy.

    A gap shows only when a later record arrives, and Faust can lose the *last* records of a
    partition too: its fetch loop moves the read position past records it then drops (a batch
    cut short), and a seek can be overtaken the same way. So `check` (every `RESEEK_S`, see
    `runner.in_order`) looks at every assigned partition of the agent's topics: records exist
    past the expected offset (the highwater says so), nothing moved for a whole interval, and
    the agent holds none of them (Faust handed it nothing it has not taken): the records are
    lost on the way, and the consumer is sought back to the expected offset. An agent that is
    merely busy holds records and is left alone: Faust's read offset is past what the agent took,
    and the agent's buffer is not empty (an empty one means the records Faust counted as handed
    over never arrived: a hand-over cut short by a rebalance, or an agent Faust restarted). A
    partition that stays held without moving for `STALL_WARN_S` is logged as stalled, with where
    the agent waits.

    Records can be missing from the log itself (a hole a broker crash left mid-produce): a
    partition that stays stuck is checked with the broker before each seek back, and offsets it
    confirms are not in the log are acknowledged and skipped (`LogHoles`, log_holes.py). It is
    asked only after `HOLE_SUSPECT_S` of seeking back to the same offset: a probe costs a fetch
    on the consumer's connection, and records lost on the way come with the first seeks.

    A seek throws away what the consumer fetched ahead for the partition, so one that brought
    nothing yet is repeated only after a back-off (2 s, doubling to `RESEEK_MAX_S`): under load a
    fetch can take longer than a second, and seeking again every second would never let it
    land."""

    RESEEK_S = 1.0
    RESEEK_MAX_S = 8.0
    STALL_WARN_S = 60.0
    COMMIT_STALL_S = 10.0
    HOLE_SUSPECT_S = 20.0  # seeking back to one offset for this long: ask the broker about it

    def __init__(
        self, app: Any, name: str, topics: Iterable[str], *, sequential: bool = True
    ) -> None:
        self.app, self.name = app, name
        self.sequential = sequential
        self.topics = frozenset(topics)
        self.expected: dict[Any, int] = {}
        self.seen: dict[Any, int] = {}  # partition -> the highest offset the agent was handed
        self._sought: dict[Any, int] = {}  # partition -> the offset last sought back to
        self._still: dict[Any, tuple[int, int | None, int | None]] = {}
        self._still_since: dict[Any, float] = {}
        self.agent: Any = None  # the Faust agent, once the runner made it (for its buffer)
        self.clock = time.monotonic
        # partition -> (offset sought, when, how long to give it before seeking there again)
        self._last_seek: dict[Any, tuple[int, float, float]] = {}
        # partition -> (committed offset, since when) while it stays below what was processed
        self._commit_behind: dict[Any, tuple[int, float]] = {}
        # offsets the log does not hold, told from records lost on the way
        self.holes = LogHoles(clock=lambda: self.clock())
        self._waiting: dict[Any, tuple[int, float]] = {}  # partition -> (offset sought, since)
        # offsets a table's recovery wants read again (changelog.py), for a stateful stage
        self.replays: Any = None  # changelog.Replays: `take(topic, partition)`

    def reset(self) -> None:
        self.expected.clear()
        self.seen.clear()
        self._sought.clear()
        self._still.clear()
        self._last_seek.clear()
        self._commit_behind.clear()
        self.holes.reset()
        self._waiting.clear()

    def buffered(self) -> int | None:
        """Records in the agent's buffers: each actor's stream has a channel of its own, with its
        own queue (None: no agent or actor to look at yet)."""
        actors = list(getattr(self.agent, "_actors", ()))
        queues: list[Any] = [
            getattr(getattr(a.stream, "channel", None), "queue", None) for a in actors
        ]
        if not queues or any(q is None for q in queues):
            return None
        total = 0
        for queue in queues:
            total += int(queue.qsize())
        return total

    async def admit(self, message: Any) -> bool:
        """True: process this record now. False: it was dropped (see the class doc)."""
        tp, offset = message.tp, message.offset
        self.seen[tp] = max(offset, self.seen.get(tp, -1))
        want = self.expected.get(tp)
        if want is None:
            try:
                want = await start_offset(self.app.consumer, tp)
            except TimeoutError:
                log.warning(
                    "%s: %s[%d]: the broker did not say the committed offset in %.0f s; "
                    "offset %d comes again",
                    self.name,
                    tp.topic,
                    tp.partition,
                    COMMITTED_TIMEOUT_S,
                    offset,
                )
                dropped(message)
                await self._seek(tp, offset)
                return False
            replay = self.replays.take(tp.topic, tp.partition) if self.replays else None
            if replay is not None and replay < want:
                log.warning(
                    "%s: %s[%d] is read again from %d (its committed offset is %d): a recovered "
                    "state is behind it",
                    self.name,
                    tp.topic,
                    tp.partition,
                    replay,
                    want,
                )
                want = replay
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
            return True
        if offset < want:
            if not self.sequential:
                dropped(message)  # the first delivery may still be in flight
            return False  # processed already: this delivery adds nothing
        dropped(message)
        self.expected[tp] = want
        if self._sought.get(tp) != want:
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
            await self._seek(tp, want)
        return False

    async def again(self, messages: Iterable[Any]) -> None:
        """These admitted records were not processed (their batch failed): none of their
        acknowledgements may be committed, and each partition is read again from the first of
        them."""
        first: dict[Any, int] = {}
        for message in messages:
            dropped(message)
            first[message.tp] = min(message.offset, first.get(message.tp, message.offset))
        for tp, offset in sorted(first.items()):
            if self.expected.get(tp, offset) > offset:
                self.expected[tp] = offset
            await self._seek(tp, offset)

    async def check(self) -> None:
        """Seeks back every partition whose records stopped coming (see the class doc). A
        safety net never takes the worker down: Faust crashes the app when a timer raises."""
        try:
            await self._check()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "%s: the in-order check failed; it runs again in %.0f s", self.name, self.RESEEK_S
            )

    async def _check(self) -> None:
        if not self.app.flow_control.is_active() or getattr(self.app, "in_recovery", False):
            # a rebalance resets this guard and seeks to the commits; during table recovery
            # Faust resumes the flow but keeps the agents' partitions paused: nothing can move
            self._still.clear()
            return
        consumer = self.app.consumer
        for tp in sorted(consumer.assignment()):
            if tp.topic not in self.topics:
                continue
            try:
                high = consumer.highwater(tp)
            except AssertionError:  # aiokafka: not assigned any more (a rebalance under way)
                return
            want = self.expected.get(tp)
            if want is None and high:  # ask the broker only where records may be missing
                try:
                    want = await start_offset(consumer, tp)
                except TimeoutError:
                    continue  # next time
            if want is None or not high or want >= high:
                self._still.pop(tp, None)
                if want is not None and high:
                    await self._check_commit(tp, want)  # caught up: is it committed too?
                continue
            read, seen = consumer._read_offset.get(tp), self.seen.get(tp)
            now = (want, read, seen)
            if self._still.get(tp) != now:
                self._still[tp] = now  # moving (or first seen behind): look again next time
                self._still_since[tp] = self.clock()
                continue
            handed_over = read is not None and read > (want - 1 if seen is None else seen)
            if handed_over and self.buffered() != 0:
                self._warn_if_stalled(tp, now)  # busy: the agent holds records it has not taken
                continue
            last = self._last_seek.get(tp)
            if last is not None and last[0] == want and self.clock() - last[1] < last[2]:
                continue  # the last seek here may still be on its way
            waiting = self._waiting.get(tp)
            if waiting is None or waiting[0] != want:
                self._waiting[tp] = waiting = (want, self.clock())
            past = want
            if self.clock() - waiting[1] >= self.HOLE_SUSPECT_S:  # seeks have not brought it
                past = await self.holes.next_offset(consumer, tp, want)
            if past != want:  # want..past-1 are not in the log: nothing to wait for
                acknowledge_absent(consumer, tp, want, past)
                self.expected[tp] = past
                self._still.pop(tp, None)
                await self._seek(tp, past)
                continue
            log.info(
                "%s: %s[%d] has records up to %d but stays at %d (Faust read %s, agent took %s, "
                "%s buffered): seeking again",
                self.name,
                tp.topic,
                tp.partition,
                high - 1,
                want,
                read,
                seen,
                self.buffered(),
            )
            await self._seek(tp, want)

    async def _check_commit(self, tp: Any, want: int) -> None:
        """The agent processed every record up to `want`, but the group's committed offset
        stays below it for `COMMIT_STALL_S`: some deliveries' acknowledgements did not count
        (made while a rebalance had the flow suspended, or dropped by another agent reading the
        topic). The records from the committed offset on are delivered again; the agent has
        processed them (they are below its expected offset), so it acknowledges them without
        processing them again and the commit moves (`admit`). Sequential agents only: a
        concurrent one drops such copies."""
        committed = self.app.consumer._committed_offset.get(tp)
        if not self.sequential or committed is None or committed >= want:
            self._commit_behind.pop(tp, None)
            return
        now = self.clock()
        behind = self._commit_behind.get(tp)
        if behind is None or behind[0] != committed:
            self._commit_behind[tp] = (committed, now)  # first seen behind, or moving
            return
        if now - behind[1] < self.COMMIT_STALL_S or self.buffered():
            return
        log.info(
            "%s: %s[%d] processed up to %d but committed at %d for %.0f s: delivering %d..%d "
            "again so that their acknowledgements count",
            self.name,
            tp.topic,
            tp.partition,
            want - 1,
            committed,
            now - behind[1],
            committed,
            want - 1,
        )
        self._commit_behind[tp] = (committed, now)
        await self._seek(tp, committed)

    def _warn_if_stalled(self, tp: Any, now: tuple[int, int | None, int | None]) -> None:
        since = self._still_since.get(tp)
        if since is None or self.clock() - since < self.STALL_WARN_S:
            return
        self._still_since[tp] = float("inf")  # once per stall
        tasks = [a.actor_task for a in list(getattr(self.agent, "_actors", ()))]
        log.warning(
            "%s: %s[%d] stalled: no progress for %.0f s at offset %d (Faust read %s, agent took "
            "%s, %s buffered); the agent waits in:\n  %s",
            self.name,
            tp.topic,
            tp.partition,
            self.STALL_WARN_S,
            now[0],
            now[1],
            now[2],
            self.buffered(),
            "\n  ".join(line for task in tasks for line in [*await_chain(task), "--"]),
        )

    async def _seek(self, tp: Any, offset: int) -> None:
        self._sought[tp] = offset
        last = self._last_seek.get(tp)
        wait = 2 * self.RESEEK_S
        if last is not None and last[0] == offset:
            wait = min(2 * last[2], self.RESEEK_MAX_S)
        self._last_seek[tp] = (offset, self.clock(), wait)
        await seek(self.app.consumer, tp, offset)
