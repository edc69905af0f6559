"""`InOrder`: each agent takes its partitions' records in offset order with none missing, from
the group's committed offset (asked of the broker when Faust does not know it)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.types import TP

from cartstream.streams.runtime.faust_compat.faust_fixes import _was_dropped
from cartstream.streams.runtime.faust_compat.in_order import InOrder, seek
from tests.fake_clock import Clock

WEIGHTS = TP("cart.weights", 3)


class Message:
    def __init__(self, offset: int, tp: Any = WEIGHTS) -> None:
        self.acked = False
        self.generation_id = 5
        self.topic, self.partition, self.offset = tp.topic, tp.partition, offset
        self.tp = tp


class Flow:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class Broker:
    """Faust's consumer thread as `InOrder` uses it: the broker's committed offsets, and seeks
    that must run in this thread (aiokafka's fetcher is not thread-safe)."""

    def __init__(self, committed: dict[Any, int | None]) -> None:
        self.committed_offsets = committed
        self.asked: list[Any] = []
        self.seeks: list[tuple[Any, int]] = []
        self.assigned = True
        self.in_thread = False

    def _ensure_consumer(self) -> Any:
        return SimpleNamespace(committed=self.committed, seek=self.seek)

    async def committed(self, tp: Any) -> int | None:
        self.asked.append(tp)
        return self.committed_offsets.get(tp)

    def seek(self, tp: Any, offset: int) -> None:
        assert self.in_thread, "aiokafka's seek called outside the consumer thread"
        if not self.assigned:
            raise IllegalStateError(f"No current assignment for partition {tp}")
        self.seeks.append((tp, offset))

    async def call_thread(self, fn: Any, *args: Any) -> Any:
        self.in_thread = True
        try:
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result
        finally:
            self.in_thread = False


class Consumer:
    """What `InOrder` reads of Faust's consumer (committed and read offsets, its assignment and
    the broker's highwaters), and its seeks."""

    def __init__(self, known: int | None, broker: dict[Any, int | None] | None = None) -> None:
        self._committed_offset: dict[Any, int | None] = defaultdict(lambda: None)
        self._committed_offset[TP("cart.weights", 3)] = known
        self._thread = Broker(broker or {})
        self._read_offset: dict[Any, int | None] = {}
        self.highwaters: dict[Any, int] = {}

    def assignment(self) -> set[Any]:
        return set(self.highwaters)

    def highwater(self, tp: Any) -> int | None:
        return self.highwaters.get(tp)

    @property
    def seeks(self) -> list[tuple[Any, int]]:
        return self._thread.seeks

    async def seek(self, tp: Any, offset: int) -> None:
        raise AssertionError("Faust's Consumer.seek calls aiokafka from the wrong thread")

    async def earliest_offsets(self, *tps: Any) -> dict[Any, int]:
        return {tp: 12 for tp in tps}  # retention removed 0..11


def make_guard(consumer: Consumer) -> InOrder:
    flow = SimpleNamespace(consumer=consumer, flow_control=Flow())
    guard = InOrder(flow, "reason", ["cart.weights", "cart.sessions"])
    guard.clock = Clock()
    return guard


def test_records_reach_the_agent_in_order_with_none_missing() -> None:
    tp = TP("cart.weights", 3)

    async def scenario() -> list[tuple[Any, int]]:
        consumer = Consumer(known=889)
        consumer.highwaters[tp] = 950
        guard = make_guard(consumer)
        assert not await guard.admit(Message(948))  # 889..947 never came: dropped, fetched again
        assert consumer.seeks == [(tp, 889)] and consumer._read_offset[tp] == 888
        consumer._read_offset[tp] = 949  # Faust's fetch loop overtook the seek, handing on 949
        assert not await guard.admit(Message(949))  # still missing: no second seek at once
        await guard.check()
        assert len(consumer.seeks) == 1  # the first look only notes where it stands
        await guard.check()  # nothing moved for a whole interval, but the seek gets 2 s
        assert len(consumer.seeks) == 1
        guard.clock.now += 2.0
        await guard.check()  # ... and brought nothing: seek again
        assert consumer.seeks == [(tp, 889), (tp, 889)]
        await guard.check()
        guard.clock.now += 3.0
        await guard.check()  # the next one gets 4 s
        assert len(consumer.seeks) == 2
        guard.clock.now += 1.0
        await guard.check()
        assert len(consumer.seeks) == 3
        guard.app.flow_control.active = False  # a rebalance: it seeks to the committed offsets
        await guard.check()
        await guard.check()
        assert len(consumer.seeks) == 3
        guard.app.flow_control.active = True
        guard.app.in_recovery = True  # table recovery: the agents' partitions stay paused
        guard.clock.now += 10.0
        await guard.check()
        await guard.check()
        assert len(consumer.seeks) == 3
        guard.app.in_recovery = False
        assert [await guard.admit(Message(o)) for o in (889, 890, 891)] == [True, True, True]
        assert not await guard.admit(Message(890))  # processed already
        guard.reset()  # a rebalance: start from the committed offset again
        assert await guard.admit(Message(889))
        return consumer.seeks

    seeks = asyncio.run(scenario())
    assert {offset for _, offset in seeks} == {889} and len(seeks) == 3


def test_an_unknown_committed_offset_is_asked_of_the_broker() -> None:
    tp = TP("cart.weights", 3)

    async def scenario(broker: dict[Any, int | None]) -> tuple[Consumer, list[bool]]:
        consumer = Consumer(known=None, broker=broker)
        guard = make_guard(consumer)
        # Faust hands the partition over at 273 while the group committed 31
        admitted = [await guard.admit(Message(o)) for o in (273, 31, 32)]
        return consumer, admitted

    consumer, admitted = asyncio.run(scenario({tp: 31}))
    assert admitted == [False, True, True] and consumer.seeks == [(tp, 31)]
    assert consumer._thread.asked == [tp] and consumer._committed_offset[tp] == 31  # for commits
    consumer, admitted = asyncio.run(scenario({}))  # nothing committed: the log's first offset
    assert consumer._committed_offset[tp] == 12 and consumer.seeks == [(tp, 12)]


def test_a_seek_runs_in_the_consumer_thread_and_survives_a_revoked_partition() -> None:
    consumer = Consumer(known=40)
    tp = TP("cart.weights", 3)
    assert asyncio.run(seek(consumer, tp, 41))
    assert consumer.seeks == [(tp, 41)] and consumer._read_offset[tp] == 40
    consumer._thread.assigned = False  # a rebalance took the partition meanwhile
    assert not asyncio.run(seek(consumer, tp, 42))
    assert consumer.seeks == [(tp, 41)] and consumer._read_offset[tp] == 40


def test_records_lost_at_a_partitions_end_are_fetched_again() -> None:
    """No later record shows the gap: the checkout requests at the end of a session partition
    were cut from a fetched batch (the chaos suite lost whole sessions that way)."""
    tp = TP("cart.sessions", 2)

    async def scenario() -> list[tuple[Any, int]]:
        consumer = Consumer(known=None)
        consumer._committed_offset[tp] = 20
        guard = make_guard(consumer)
        assert [await guard.admit(Message(o, tp)) for o in (20, 21)] == [True, True]
        consumer._read_offset[tp] = 21
        consumer.highwaters[tp] = 26  # 22..25 are on the broker, none reached the agent
        await guard.check()
        await guard.check()
        assert consumer.seeks == [(tp, 22)] and consumer._read_offset[tp] == 21
        consumer.highwaters[tp] = 22  # another partition, caught up: nothing to do
        await guard.check()
        await guard.check()
        return consumer.seeks

    assert asyncio.run(scenario()) == [(tp, 22)]


def test_a_busy_agent_or_a_moving_partition_is_left_alone() -> None:
    tp = TP("cart.sessions", 2)

    async def scenario() -> list[tuple[Any, int]]:
        consumer = Consumer(known=None)
        consumer._committed_offset[tp] = 20
        consumer.highwaters[tp] = 30
        guard = make_guard(consumer)
        assert await guard.admit(Message(20, tp))
        consumer._read_offset[tp] = 24  # 21..24 wait in the agent's buffer: it is busy
        await guard.check()
        await guard.check()
        consumer._read_offset[tp] = 20  # all taken; and the next records keep coming
        for offset in (21, 22):
            assert await guard.admit(Message(offset, tp))
            consumer._read_offset[tp] = offset
            await guard.check()
        consumer.highwaters[tp] = 23  # caught up
        consumer.highwaters[TP("cart.frames", 9)] = 99  # not its topic: never looked at
        await guard.check()
        await guard.check()
        return consumer.seeks

    assert asyncio.run(scenario()) == []


class Agent:
    """What `InOrder` reads of a Faust agent: its actors, each with its task and its stream's
    own channel (whose queue is the buffer; the agent's `channel_iterator` is only the template
    Faust clones it from)."""

    def __init__(self, buffered: int, task: Any = None) -> None:
        queue = SimpleNamespace(qsize=lambda: buffered)
        self._channel_iterator = SimpleNamespace(queue=SimpleNamespace(qsize=lambda: 0))
        stream = SimpleNamespace(channel=SimpleNamespace(queue=queue))
        self._actors = [SimpleNamespace(actor_task=task, stream=stream)]


def test_records_counted_as_handed_over_but_never_in_the_buffer_are_fetched_again() -> None:
    """Faust moved its read offset past records the agent never got (a hand-over cut short, an
    agent it restarted): with the buffer empty, the agent is not busy, the records are lost."""
    tp = TP("cart.weights", 7)

    async def scenario(buffered: int) -> list[tuple[Any, int]]:
        consumer = Consumer(known=None)
        consumer._committed_offset[tp] = 860
        consumer.highwaters[tp] = 1271
        guard = make_guard(consumer)
        guard.agent = Agent(buffered)
        assert await guard.admit(Message(860, tp))
        consumer._read_offset[tp] = 900  # Faust says it handed on up to 900
        await guard.check()
        await guard.check()
        return consumer.seeks

    assert asyncio.run(scenario(buffered=0)) == [(tp, 861)]
    assert asyncio.run(scenario(buffered=40)) == []  # they wait in the buffer: busy


def test_an_agent_held_without_progress_is_logged_with_where_it_waits(caplog: Any) -> None:
    tp = TP("cart.weights", 7)

    async def stuck(gate: asyncio.Event) -> None:
        await gate.wait()

    async def scenario() -> None:
        gate = asyncio.Event()
        task = asyncio.ensure_future(stuck(gate))
        await asyncio.sleep(0)
        consumer = Consumer(known=None)
        consumer._committed_offset[tp] = 860
        consumer.highwaters[tp] = 1271
        guard = make_guard(consumer)
        guard.STALL_WARN_S = 0.0
        guard.agent = Agent(40, task)
        assert await guard.admit(Message(860, tp))
        consumer._read_offset[tp] = 900
        for _ in range(3):
            await guard.check()
        gate.set()
        await task
        assert consumer.seeks == []

    with caplog.at_level("WARNING"):
        asyncio.run(scenario())
    stalls = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(stalls) == 1, stalls  # once per stall
    assert "cart.weights[7]" in stalls[0] and " stuck" in stalls[0], stalls[0]


def test_a_broker_that_never_says_the_committed_offset_holds_up_neither_agent_nor_fetching(
    monkeypatch: Any,
) -> None:
    """aiokafka retries a committed-offset fetch for ever; it runs in the consumer thread's
    method queue, whose two workers also do every fetch. A bounded wait frees them."""
    from cartstream.streams.runtime.faust_compat import in_order

    tp = TP("cart.weights", 3)
    monkeypatch.setattr(in_order, "COMMITTED_TIMEOUT_S", 0.05)

    async def scenario() -> tuple[bool, list[tuple[Any, int]], bool]:
        consumer = Consumer(known=None)
        never = asyncio.Event()

        async def hangs(_tp: Any) -> int | None:
            await never.wait()
            return 31

        consumer._thread._ensure_consumer = lambda: SimpleNamespace(  # type: ignore[method-assign]
            committed=hangs, seek=consumer._thread.seek
        )
        guard = make_guard(consumer)
        admitted = await guard.admit(Message(40))
        consumer.highwaters[tp] = 50
        guard.expected.clear()
        await guard.check()  # the check skips it this time, it does not hang either
        return admitted, consumer.seeks, tp in guard.expected

    admitted, seeks, known = asyncio.run(asyncio.wait_for(scenario(), 5))
    assert not admitted and seeks == [(tp, 40)]  # dropped, and it comes again later
    assert not known


def test_a_seek_holds_fausts_read_offset_below_its_target() -> None:
    from cartstream.streams.runtime.faust_compat.read_offsets import ReadOffsets

    consumer = Consumer(known=40)
    consumer._read_offset = ReadOffsets()
    tp = TP("cart.weights", 3)
    assert asyncio.run(seek(consumer, tp, 41))
    consumer._read_offset[tp] = 90  # a batch fetched before the seek is handed over
    assert consumer._read_offset[tp] == 40 and consumer._read_offset.in_refetch(tp)


def test_a_partition_taken_by_a_rebalance_mid_check_never_crashes_the_worker() -> None:
    """Faust crashes the whole app when a timer raises; aiokafka asserts on the highwater of a
    partition a rebalance took meanwhile (the documented chaos run lost a worker that way)."""
    tp = TP("cart.weights", 3)

    async def scenario() -> list[tuple[Any, int]]:
        consumer = Consumer(known=10)
        consumer.highwaters[tp] = 50

        def taken(_tp: Any) -> int:
            raise AssertionError("Partition is not assigned")

        consumer.highwater = taken  # type: ignore[method-assign]
        guard = make_guard(consumer)
        await guard.check()
        consumer.assignment = lambda: {None}  # type: ignore[method-assign,assignment]
        await guard.check()  # anything else that goes wrong is logged, not raised
        return consumer.seeks

    assert asyncio.run(scenario()) == []


def test_a_failed_batch_is_read_again_from_its_first_record_and_never_committed() -> None:
    sessions = TP("cart.sessions", 3)

    async def scenario() -> list[Message]:
        consumer = Consumer(known=100)
        consumer._committed_offset[sessions] = 7
        guard = make_guard(consumer)
        batch = [Message(100), Message(7, sessions), Message(101), Message(8, sessions)]
        assert [await guard.admit(m) for m in batch] == [True] * 4
        await guard.again(batch)  # the batch's publish failed
        assert sorted(consumer.seeks) == sorted([(WEIGHTS, 100), (sessions, 7)])
        assert await guard.admit(Message(100)) and await guard.admit(Message(7, sessions))
        return batch

    batch = asyncio.run(scenario())
    assert all(_was_dropped(m) for m in batch)  # their acks move no committed offset


def test_a_record_two_agents_read_becomes_committable_after_one_of_them_seeks_back() -> None:
    """basket.changes goes to anomalies and reconcile; a seek by one re-delivers to both. Each
    offset needs one delivery that no agent dropped, or the committed offset never moves."""
    changes = TP("basket.changes", 2)

    async def scenario() -> tuple[list[Message], list[Message], Consumer]:
        consumer = Consumer(known=None)
        consumer._committed_offset[changes] = 77
        consumer.highwaters[changes] = 91
        flow = SimpleNamespace(consumer=consumer, flow_control=Flow())
        anomalies = InOrder(flow, "anomalies", ["basket.changes"])
        reconcile = InOrder(flow, "reconcile", ["basket.changes"])
        first = [Message(o, changes) for o in range(77, 91)]
        for message in first:  # reconcile took all; anomalies missed 77..89 (a full buffer)
            assert await reconcile.admit(message)
        assert not await anomalies.admit(first[-1])  # 90 past 77: dropped, sought back to 77
        again = [Message(o, changes) for o in range(77, 91)]
        for message in again:  # the re-delivery reaches both agents
            assert await anomalies.admit(message)
            assert not await reconcile.admit(message)  # processed already
        return first, again, consumer

    first, again, consumer = asyncio.run(scenario())
    assert consumer.seeks == [(changes, 77)]
    assert _was_dropped(first[-1])
    assert not any(_was_dropped(m) for m in again)  # every offset 77..90 can be committed


def test_a_concurrent_agent_never_commits_a_copy_of_a_record_still_in_flight() -> None:
    frames = TP("cart.frames", 1)

    async def scenario() -> Message:
        consumer = Consumer(known=None)
        consumer._committed_offset[frames] = 10
        flow = SimpleNamespace(consumer=consumer, flow_control=Flow())
        detect = InOrder(flow, "detect", ["cart.frames"], sequential=False)
        assert await detect.admit(Message(10, frames))  # in an inference batch right now
        copy = Message(10, frames)
        assert not await detect.admit(copy)
        return copy

    assert _was_dropped(asyncio.run(scenario()))  # the first delivery's ack commits it


def test_processed_records_whose_commit_stalls_are_delivered_again_to_count() -> None:
    """The agent took 5..9, but their acknowledgements did not count (a rebalance had the flow
    suspended): the committed offset stays at 5. After `COMMIT_STALL_S` the records come again
    and are acknowledged as processed, without processing them twice."""
    tp = TP("anomalies", 2)

    async def scenario(sequential: bool) -> tuple[Consumer, list[Message]]:
        consumer = Consumer(known=None)
        consumer._committed_offset[tp] = 5
        consumer.highwaters[tp] = 10
        flow = SimpleNamespace(consumer=consumer, flow_control=Flow())
        guard = InOrder(flow, "persist", ["anomalies"], sequential=sequential)
        guard.clock = Clock()
        assert [await guard.admit(Message(o, tp)) for o in range(5, 10)] == [True] * 5
        await guard.check()  # caught up, committed behind: noted
        guard.clock.now += 5.0
        await guard.check()
        assert consumer.seeks == []  # Faust commits every second: give it time
        guard.clock.now += 6.0
        await guard.check()
        again = [Message(o, tp) for o in range(5, 10)]
        if consumer.seeks:
            assert [await guard.admit(m) for m in again] == [False] * 5  # not processed twice
        return consumer, again

    consumer, again = asyncio.run(scenario(sequential=True))
    assert consumer.seeks == [(tp, 5)]
    assert not any(_was_dropped(m) for m in again)  # their acknowledgements count
    consumer, _ = asyncio.run(scenario(sequential=False))
    assert consumer.seeks == []  # a concurrent agent drops such copies: no use seeking


def _stuck_at_a_hole(answers: list[int]) -> tuple[InOrder, Consumer, Any]:
    """An agent that took cart.frames[2] up to 65 and then saw 67: offset 66 never comes. The
    broker's answers to "the first offset from 66" are `answers`, one per question (the last
    repeats)."""
    tp = TP("cart.frames", 2)
    consumer = Consumer(known=None)
    consumer._committed_offset[tp] = 60
    consumer._acked, consumer._acked_index = defaultdict(list), defaultdict(set)  # type: ignore[attr-defined]
    consumer.highwaters[tp] = 148
    flow = SimpleNamespace(consumer=consumer, flow_control=Flow())
    guard = InOrder(flow, "detect", ["cart.frames"], sequential=False)
    guard.clock = Clock()
    asked: list[int] = []

    async def first_offset(_consumer: Any, _tp: Any, offset: int) -> int | None:
        asked.append(offset)
        return answers[min(len(asked), len(answers)) - 1]

    guard.holes.first_offset = first_offset
    return guard, consumer, tp


async def _check_for(guard: InOrder, seconds: float) -> None:
    for _ in range(int(seconds)):
        guard.clock.now += 1.0
        await guard.check()


def test_a_hole_the_broker_confirms_for_long_enough_is_skipped_and_committed() -> None:
    """A broker killed mid-produce counted offset 66 but never stored it (chaos run with a broker
    restart on S3 storage): fetching 66 again and again would hold the partition for ever."""

    async def scenario() -> tuple[Consumer, Any, list[bool]]:
        guard, consumer, tp = _stuck_at_a_hole([67])
        assert [await guard.admit(Message(o, tp)) for o in range(60, 66)] == [True] * 6
        assert not await guard.admit(Message(67, tp))  # the jump: 67 dropped, 66 fetched again
        consumer._read_offset[tp] = 67  # Faust handed on what it read
        await _check_for(guard, guard.HOLE_SUSPECT_S + guard.holes.CONFIRM_S - 5)
        assert {offset for _, offset in consumer.seeks} == {66}  # not confirmed yet
        await _check_for(guard, 15)
        taken = [await guard.admit(Message(o, tp)) for o in (67, 68)]
        return consumer, tp, taken

    consumer, tp, taken = asyncio.run(scenario())
    assert consumer.seeks[-1] == (tp, 67) and taken == [True, True]
    assert 66 in consumer._acked[tp]  # type: ignore[attr-defined]  # the commit can pass it


def test_a_record_still_being_written_is_waited_for_not_skipped() -> None:
    """Two produces to one partition can finish out of order: for a moment the log holds 67
    but not yet 66. Once 66 is there, nothing is skipped."""

    async def scenario() -> tuple[Consumer, Any]:
        guard, consumer, tp = _stuck_at_a_hole([67, 67, 66])
        assert [await guard.admit(Message(o, tp)) for o in range(60, 66)] == [True] * 6
        assert not await guard.admit(Message(67, tp))
        consumer._read_offset[tp] = 67  # Faust handed on what it read
        await _check_for(guard, guard.HOLE_SUSPECT_S + 3 * guard.holes.CONFIRM_S)
        return consumer, tp

    consumer, tp = asyncio.run(scenario())
    assert {offset for _, offset in consumer.seeks} == {66}
    assert 66 not in consumer._acked[tp]  # type: ignore[attr-defined]


def test_a_recovery_waiting_for_a_hole_at_a_changelogs_tail_ends() -> None:
    """Issue 38: the broker acknowledged changelog offsets 41..43 and never stored them; the
    recovery waited for them for good. Confirmed absent, they count as recovered; a partition
    still moving, or one whose missing records are followed by others, is left alone."""
    from cartstream.streams.runtime.faust_compat.log_holes import ChangelogTails, LogHoles

    now = [0.0]
    tail, moving, middle = TP("cl", 0), TP("cl", 1), TP("cl", 2)
    recovery = SimpleNamespace(
        in_recovery=True,
        active_offsets={tail: 40, moving: 10, middle: 5},
        active_highwaters={tail: 43, moving: 30, middle: 9},
    )
    app = SimpleNamespace(tables=SimpleNamespace(recovery=recovery), consumer=None)

    async def first_offset(_consumer: Any, tp: Any, offset: int) -> int | None:
        return {tail: 44, moving: offset, middle: 7}[tp]  # 44: the fetch's high watermark

    tails = ChangelogTails(app, LogHoles(first_offset, clock=lambda: now[0]))
    for _ in range(12):  # a look every 5 s for a minute
        asyncio.run(tails.check())
        recovery.active_offsets[moving] += 1
        now[0] += 5.0
    assert recovery.active_offsets[tail] == 43  # the rest confirmed absent: recovered
    assert recovery.active_offsets[middle] == 5  # records past the hole: the fetch goes on
    recovery.in_recovery = False
    asyncio.run(tails.check())  # nothing to do outside a recovery
