"""The correction to Faust's acknowledgements: a message skipped during a rebalance is never
committed (it is delivered again), a processed one is."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.types import TP

from cartstream.streams.runtime.faust_compat.faust_fixes import (
    committable,
    never_commit_skipped_messages,
)


class Flow:
    def __init__(self, active: bool) -> None:
        self.active = active

    def is_active(self) -> bool:
        return self.active


def app(active: bool = True, generation: int = 5) -> Any:
    return SimpleNamespace(flow_control=Flow(active), consumer_generation_id=generation)


def test_only_acknowledgements_of_the_live_flow_are_committable() -> None:
    assert committable(app(), SimpleNamespace(generation_id=5))
    assert not committable(app(active=False), SimpleNamespace(generation_id=5))  # rebalancing
    assert not committable(app(), SimpleNamespace(generation_id=4))  # fetched before it


class Message:
    def __init__(self, offset: int, generation: int = 5) -> None:
        self.acked = False
        self.generation_id = generation
        self.topic, self.partition, self.offset = "cart.weights", 3, offset
        self.tp = TP(self.topic, self.partition)


class Consumer:
    """The state Faust's `Consumer.ack` reads and writes."""

    def __init__(self, flow_active: bool) -> None:
        self.app = app(flow_active)
        self.app.topics = SimpleNamespace(acks_enabled_for=lambda topic: True)
        self._committed_offset: dict[Any, int | None] = defaultdict(lambda: None)
        self._acked_index: dict[Any, set[int]] = defaultdict(set)
        self._acked: dict[Any, list[int]] = defaultdict(list)
        self._unacked_messages: set[Message] = set()
        self._n_acked = 0
        self._waiting_for_ack = None


def test_a_skipped_message_is_done_but_its_offset_is_never_committable() -> None:
    never_commit_skipped_messages()
    never_commit_skipped_messages()  # idempotent
    live, rebalancing = Consumer(flow_active=True), Consumer(flow_active=False)
    processed, skipped, stale = Message(178), Message(179), Message(180, generation=4)
    for consumer, message in ((live, processed), (rebalancing, skipped), (live, stale)):
        consumer._unacked_messages.add(message)
        faust_consumer.Consumer.ack(consumer, message)  # as patched
        assert message.acked and message not in consumer._unacked_messages
    assert live._acked[processed.tp] == [178]  # committable
    assert rebalancing._acked[skipped.tp] == []  # delivered again after the rebalance


class Event:
    """What `never_hold_events_through_a_rebalance` touches of a Faust event: its message
    and its acknowledgement."""

    def __init__(self, offset: int) -> None:
        self.message = Message(offset)
        self.acks = 0

    def ack(self) -> bool:
        self.acks += 1
        self.message.acked = True
        return True


def test_a_commit_never_passes_a_record_that_was_not_processed() -> None:
    from cartstream.streams.runtime.faust_compat.faust_fixes import never_commit_past_unprocessed

    never_commit_past_unprocessed()
    never_commit_past_unprocessed()  # idempotent
    tp = TP("cart.weights", 7)

    def consumer(committed: int | None, acked: list[int]) -> Any:
        state = SimpleNamespace(_committed_offset=defaultdict(lambda: None), app=SimpleNamespace())
        state._committed_offset[tp] = committed
        state._acked = {tp: list(acked)}
        state._acked_index = {tp: set(acked)}
        return state

    def commit(state: Any) -> int | None:
        return faust_consumer.Consumer._new_offset(state, tp)  # type: ignore[no-any-return]

    assert commit(consumer(176, [176, 177, 178, 180])) == 179  # a run from the committed offset
    assert commit(consumer(176, [177, 178])) is None  # 176 not processed (Faust committed 179)
    assert commit(consumer(None, [530, 531])) is None  # unknown start (Faust committed 532)
    state = consumer(176, [170, 171, 176])  # re-processed after a re-delivery: discarded
    assert commit(state) == 177 and state._acked[tp] == [] and state._acked_index[tp] == set()
    state = consumer(176, [177, 180])
    assert commit(state) is None and state._acked[tp] == [177, 180]  # kept for later
    state._acked[tp].append(176)
    assert commit(state) == 178 and state._acked[tp] == [180]


def test_nothing_is_committed_while_commits_are_held() -> None:
    import time

    from cartstream.streams.runtime.faust_compat.faust_fixes import (
        commits_held,
        hold_commits,
        never_commit_past_unprocessed,
    )

    never_commit_past_unprocessed()
    tp = TP("cart.weights", 3)
    state = SimpleNamespace(
        _committed_offset={tp: 10}, _acked={tp: [10, 11]}, _acked_index={tp: {10, 11}}
    )
    state.app = SimpleNamespace()
    hold_commits(state.app, time.monotonic() + 60)
    hold_commits(state.app, time.monotonic() - 1)  # a shorter hold never shortens one
    assert commits_held(state.app)
    assert faust_consumer.Consumer._new_offset(state, tp) is None
    assert state._acked[tp] == [10, 11]  # kept: committed once the hold ends
    assert not commits_held(state.app, now=time.monotonic() + 61)
    state.app = SimpleNamespace()
    assert faust_consumer.Consumer._new_offset(state, tp) == 12


def test_a_rebalance_never_waits_for_a_copy_stuck_outside_every_agent() -> None:
    import asyncio

    from mode.utils.queues import FlowControlEvent, ThrowableQueue

    from cartstream.streams.runtime.faust_compat.faust_fixes import (
        _was_dropped,
        never_hold_events_through_a_rebalance,
    )

    never_hold_events_through_a_rebalance()
    never_hold_events_through_a_rebalance()  # idempotent

    async def scenario() -> None:
        flow = FlowControlEvent(initially_suspended=False)
        queue: Any = ThrowableQueue(maxsize=1, flow_control=flow, clear_on_resume=True)
        queued, waiting, late = Event(30), Event(31), Event(32)
        await queue.put(queued)  # room: queued as usual
        put = asyncio.ensure_future(queue.put(waiting))  # full: waits for room
        await asyncio.sleep(0.01)
        assert not put.done() and queued.acks == 0
        flow.suspend()  # a rebalance: what Faust's `_on_partitions_revoked` does
        flow.clear()
        await asyncio.wait_for(asyncio.gather(put, return_exceptions=True), timeout=1)
        await asyncio.wait_for(queue.put(late), timeout=1)  # put while suspended: not held
        assert queue.empty()
        for event in (queued, waiting, late):
            assert event.acks == 1  # the rebalance does not wait for it ...
            assert _was_dropped(event.message)  # ... and its offset is never committed

        flow.resume()
        fresh = Event(30)  # delivered again after the rebalance
        await queue.put(fresh)
        assert queue.get_nowait() is fresh and fresh.acks == 0 and not _was_dropped(fresh.message)

    asyncio.run(scenario())


def test_streams_acknowledge_through_the_patched_consumer() -> None:
    """Faust's Cython stream iterator inlines `Consumer.ack`, bypassing every correction."""
    from faust import streams

    from cartstream.streams.runtime.faust_compat.faust_fixes import install

    install()
    assert streams._CStreamIterator is None
