"""The commit order (streams/checkpoint.py): per commit, the states every committed offset went
into are produced and each delivery awaited and checked before any offset is committed; a
failed delivery commits nothing and loses nothing; revoked partitions' states are dropped; a
worker that stood still longer than a session timeout writes and commits nothing for one."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from cartstream.streams.changelog import ChangelogWrites
from cartstream.streams.checkpoint import Checkpoint, checkpoint_of
from cartstream.streams.runtime.faust_compat import faust_fixes
from tests.fake_clock import Clock

W3 = TP("cart.weights", 3)


class Consumer:
    """The parts of Faust's consumer a commit uses; every step goes into `log`."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._committed_offset: dict[TP, int] = {W3: 0}

    def ack(self, tp: TP, *offsets: int) -> None:
        self._acked[tp] += offsets
        self._acked_index[tp].update(offsets)

    def _filter_committable_offsets(self, tps: Any) -> dict[TP, int]:
        offsets = {}
        for tp, acked in self._acked.items():
            if acked:
                offsets[tp] = max(acked) + 1
                acked.clear()
                self._acked_index[tp].clear()
        return offsets

    async def _handle_attached(self, offsets: dict[TP, int]) -> None:
        return None

    async def _commit_offsets(self, offsets: dict[TP, int], **_: Any) -> bool:
        self.log.append(("commit", dict(offsets)))
        self._committed_offset.update(offsets)
        return True


class Writes(ChangelogWrites):
    """Deliveries that take `delay_s` and fail while `failing`; each one into `log` when the
    broker has it."""

    def __init__(self, log: list[Any], delay_s: float = 0.0) -> None:
        super().__init__(table=None)
        self.log = log
        self.delay_s = delay_s
        self.failing = False

    async def send(self, key: str, value: Any, partition: int) -> Any:
        async def deliver() -> None:
            await asyncio.sleep(self.delay_s)
            if self.failing:
                raise ConnectionError("broker gone")
            self.log.append(("stored", partition, key, value))

        return asyncio.ensure_future(deliver())


class App:
    def __init__(self) -> None:
        self.revoked: list[set[Any]] = []
        self.tables = SimpleNamespace(on_partitions_revoked=self.revoked.append)

    def rebalance(self, *partitions: int) -> None:
        self.tables.on_partitions_revoked({TP("cart.weights", p) for p in partitions})


def _setup(
    stall_s: float = 6.0, delay_s: float = 0.0
) -> tuple[App, Checkpoint, Writes, Consumer, list[Any], Clock]:
    app, log = App(), []
    checkpoint = checkpoint_of(app, stall_s)
    assert checkpoint_of(app, stall_s) is checkpoint  # one per app
    writes = Writes(log, delay_s)
    checkpoint.writes.append(writes)
    checkpoint.clock = clock = Clock()
    return app, checkpoint, writes, Consumer(log), log, clock


def _commit(checkpoint: Checkpoint, consumer: Consumer) -> bool:
    return asyncio.run(checkpoint.commit(consumer, [W3], True))


def test_offsets_are_committed_only_once_every_state_is_stored_however_slow() -> None:
    """Issue 38, window 1: states were handed to Faust's producer buffer and the commit relied
    on `producer.flush()`, which gives up after 0.1 s: with 200 ms deliveries the offsets went
    first, and a SIGKILL then restored an older state behind them."""
    _, checkpoint, writes, consumer, log, _ = _setup(delay_s=0.2)
    writes.put("s1", {"v": 1}, 3)
    writes.put("s1", {"v": 2}, 3)  # one record per key per commit: the latest
    writes.forget("s2", 3)
    consumer.ack(W3, 0, 1, 2)
    assert _commit(checkpoint, consumer)
    assert log == [("stored", 3, "s1", {"v": 2}), ("stored", 3, "s2", None), ("commit", {W3: 3})]


def test_a_failed_delivery_commits_nothing_and_the_next_commit_makes_up_for_it() -> None:
    _, checkpoint, writes, consumer, log, _ = _setup()
    writes.put("s1", {"v": 1}, 3)
    consumer.ack(W3, 0, 1)
    writes.failing = True
    assert not _commit(checkpoint, consumer)
    assert log == [] and checkpoint.failed == 1 and len(writes) == 1
    assert consumer._acked[W3] == [0, 1]  # the acknowledgements are back
    writes.put("s2", {"v": 7}, 3)  # more work meanwhile
    consumer.ack(W3, 2)
    writes.failing = False
    assert _commit(checkpoint, consumer)
    assert log == [
        ("stored", 3, "s1", {"v": 1}),
        ("stored", 3, "s2", {"v": 7}),
        ("commit", {W3: 3}),
    ]


def test_a_newer_state_put_during_a_failed_commit_is_not_overwritten() -> None:
    writes = Writes([])
    writes.put("s1", {"v": 1}, 3)
    taken = writes.take()
    writes.put("s1", {"v": 2}, 3)
    writes.restore(taken)
    assert writes.take() == {"s1": ({"v": 2}, 3)}


def test_a_rebalance_drops_the_pending_writes_of_revoked_partitions() -> None:
    app, checkpoint, writes, consumer, log, _ = _setup()
    writes.put("s1", {"v": 1}, 3)
    writes.put("s2", {"v": 1}, 4)
    app.rebalance(3)
    assert app.revoked == [{TP("cart.weights", 3)}]  # Faust's own handling still runs
    _commit(checkpoint, consumer)
    assert log == [("stored", 4, "s2", {"v": 1})]


def test_after_a_standstill_nothing_is_written_or_committed_for_a_session_timeout() -> None:
    app, checkpoint, writes, consumer, log, clock = _setup(stall_s=6.0)
    _commit(checkpoint, consumer)  # t=0: the last commit before the worker stood still
    writes.put("s1", {"v": 1}, 3)  # a state of a partition another worker has taken over
    writes.put("s2", {"v": 1}, 4)
    consumer.ack(W3, 0)
    clock.now += 12.0  # SIGSTOP for 12 s: evicted from the group meanwhile
    assert not _commit(checkpoint, consumer)  # the overdue timer fires before the heartbeat
    assert log == [] and faust_fixes.commits_held(app, clock.now)
    app.rebalance(3)  # the heartbeat fails, the worker re-joins: partition 3 revoked
    clock.now += 1.0
    _commit(checkpoint, consumer)
    assert log == []
    clock.now += 5.5  # the hold is over: what this worker still owns is written
    _commit(checkpoint, consumer)
    assert not faust_fixes.commits_held(app, clock.now)
    assert log[0] == ("stored", 4, "s2", {"v": 1})


def test_a_steady_worker_is_never_held() -> None:
    app, checkpoint, writes, consumer, log, clock = _setup(stall_s=6.0)
    for i in range(20):
        writes.put(f"s{i}", {"v": i}, i % 8)
        clock.now += 1.0
        _commit(checkpoint, consumer)
        assert not faust_fixes.commits_held(app, clock.now)
    assert len(log) == 20


def test_a_failed_commit_never_restores_states_of_partitions_revoked_meanwhile() -> None:
    """A rebalance while the deliveries are awaited: had the failed commit put them back, the
    next commit would write states of a partition another worker owns by then."""
    app, checkpoint, writes, consumer, log, _ = _setup(delay_s=0.05)
    writes.put("s3", {"v": 1}, 3)
    writes.put("s4", {"v": 1}, 4)
    writes.failing = True

    async def commit_during_a_rebalance() -> bool:
        committing = asyncio.ensure_future(checkpoint.commit(consumer, [W3], True))
        await asyncio.sleep(0.01)
        app.rebalance(3)
        return await committing

    assert not asyncio.run(commit_during_a_rebalance())
    writes.failing = False
    assert _commit(checkpoint, consumer) is False  # nothing to commit, states written
    assert log == [("stored", 4, "s4", {"v": 1})]
