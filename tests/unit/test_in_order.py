"""`InOrder`: each agent takes its partitions' records in offset order with none missing, from
the group's committed offset (asked of the broker when Faust does not know it)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.types import TP

from cartstream.streams.in_order import InOrder, seek


class Message:
    def __init__(self, offset: int) -> None:
        self.acked = False
        self.generation_id = 5
        self.topic, self.partition, self.offset = "cart.weights", 3, offset
        self.tp = TP(self.topic, self.partition)


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
    """What `InOrder` reads of Faust's consumer, and its seeks."""

    def __init__(self, known: int | None, broker: dict[Any, int | None] | None = None) -> None:
        self._committed_offset: dict[Any, int | None] = defaultdict(lambda: None)
        self._committed_offset[TP("cart.weights", 3)] = known
        self._thread = Broker(broker or {})
        self._read_offset: dict[Any, int] = {}

    @property
    def seeks(self) -> list[tuple[Any, int]]:
        return self._thread.seeks

    async def seek(self, tp: Any, offset: int) -> None:
        raise AssertionError("Faust's Consumer.seek calls aiokafka from the wrong thread")

    async def earliest_offsets(self, *tps: Any) -> dict[Any, int]:
        return {tp: 12 for tp in tps}  # retention removed 0..11


def make_guard(consumer: Consumer) -> InOrder:
    return InOrder(SimpleNamespace(consumer=consumer, flow_control=Flow()), "reason")


def test_records_reach_the_agent_in_order_with_none_missing() -> None:
    async def scenario() -> list[tuple[Any, int]]:
        consumer = Consumer(known=889)
        guard = make_guard(consumer)
        guard.RESEEK_S = 0.05
        assert not await guard.admit(Message(948))  # 889..947 never came: dropped, fetched again
        assert consumer.seeks == [(TP("cart.weights", 3), 889)]
        assert not await guard.admit(Message(949))  # still missing: no second seek at once
        await asyncio.sleep(0.2)  # ... but the watchdog seeks again while nothing moves
        assert len(consumer.seeks) >= 2
        guard.app.flow_control.active = False  # a rebalance: it seeks to the committed offsets
        seeks = len(consumer.seeks)
        await asyncio.sleep(0.2)
        assert len(consumer.seeks) == seeks
        guard.app.flow_control.active = True
        assert [await guard.admit(Message(o)) for o in (889, 890, 891)] == [True, True, True]
        assert not await guard.admit(Message(890))  # processed already
        guard.reset()  # a rebalance: start from the committed offset again
        assert await guard.admit(Message(889))
        return consumer.seeks

    seeks = asyncio.run(scenario())
    assert {offset for _, offset in seeks} == {889}


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
    assert consumer.seeks == [(tp, 41)] and consumer._read_offset[tp] == 41
    consumer._thread.assigned = False  # a rebalance took the partition meanwhile
    assert not asyncio.run(seek(consumer, tp, 42))
    assert consumer.seeks == [(tp, 41)] and consumer._read_offset[tp] == 41
