"""The correction to Faust's acknowledgements: a message skipped during a rebalance is never
committed (it is delivered again), a processed one is."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.types import TP

from cartstream.streams.faust_fixes import committable, never_commit_skipped_messages


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


class Consumer2:
    """What `InOrder` reads of Faust's consumer, and its seeks."""

    def __init__(self, committed: int | None) -> None:
        self._committed_offset: dict[Any, int | None] = {TP("cart.weights", 3): committed}
        self.seeks: list[tuple[Any, int]] = []

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))


def test_records_reach_the_agent_in_order_with_none_missing() -> None:
    import asyncio

    from cartstream.streams.faust_fixes import InOrder

    async def scenario() -> list[tuple[Any, int]]:
        consumer = Consumer2(committed=889)
        guard = InOrder(SimpleNamespace(consumer=consumer), "reason")
        guard.RESEEK_S = 0.05
        assert not await guard.admit(Message(948))  # 889..947 never came: dropped, fetched again
        assert consumer.seeks == [(TP("cart.weights", 3), 889)]
        assert not await guard.admit(Message(949))  # still missing: no second seek at once
        await asyncio.sleep(0.2)  # ... but the watchdog seeks again while nothing moves
        assert len(consumer.seeks) >= 2
        assert [await guard.admit(Message(o)) for o in (889, 890, 891)] == [True, True, True]
        assert not await guard.admit(Message(890))  # processed already
        guard.reset()  # a rebalance: start from the committed offset again
        assert await guard.admit(Message(889))
        return consumer.seeks

    seeks = asyncio.run(scenario())
    assert {offset for _, offset in seeks} == {889}
