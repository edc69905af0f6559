"""A stateful stage's changelog writes wait for the consumer's commit (streams/changelog.py):
written when a commit starts; dropped for partitions a rebalance revokes; and after the worker
stood still longer than a session timeout, neither written nor committed until the group has
had time to say whether the worker still owns its partitions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.sensors.base import SensorDelegate
from faust.types import TP

from cartstream.streams import faust_fixes
from cartstream.streams.changelog import ChangelogWrites, CommitGuard, guard_commits


class Table:
    def __init__(self) -> None:
        self.changelog: list[tuple[int, str, Any]] = []

    def send_changelog(self, partition: int, key: str, value: Any, **_: Any) -> None:
        self.changelog.append((partition, key, value))


class App:
    """The parts of a Faust app the guard uses; `revoked` is what Faust's table manager
    would do at a rebalance (after the guard's hook)."""

    def __init__(self) -> None:
        self.sensors = SensorDelegate(SimpleNamespace(beacon=SimpleNamespace(new=lambda _: None)))
        self.revoked: list[set[Any]] = []
        self.tables = SimpleNamespace(on_partitions_revoked=self.revoked.append)

    def commit(self) -> None:
        self.sensors.on_commit_initiated(consumer=None)

    def rebalance(self, *partitions: int) -> None:
        self.tables.on_partitions_revoked({TP("cart.weights", p) for p in partitions})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _guarded(stall_s: float = 6.0) -> tuple[App, Table, ChangelogWrites, CommitGuard, Clock]:
    app, table = App(), Table()
    writes = ChangelogWrites(table)
    guard = guard_commits(app, writes, stall_s)
    assert guard_commits(app, ChangelogWrites(Table()), stall_s) is guard  # one per app
    clock = Clock()
    guard.clock = clock
    return app, table, writes, guard, clock


def test_each_key_is_written_once_when_a_commit_starts() -> None:
    app, table, writes, _, _ = _guarded()
    writes.put("s1", {"v": 1}, 3)
    writes.put("s1", {"v": 2}, 3)
    writes.forget("s2", 5)
    assert table.changelog == []
    app.commit()
    assert table.changelog == [(3, "s1", {"v": 2}), (5, "s2", None)]
    app.commit()
    assert len(table.changelog) == 2 and len(writes) == 0


def test_a_rebalance_drops_the_pending_writes_of_revoked_partitions() -> None:
    app, table, writes, _, _ = _guarded()
    writes.put("s1", {"v": 1}, 3)
    writes.put("s2", {"v": 1}, 4)
    app.rebalance(3)
    assert app.revoked == [{TP("cart.weights", 3)}]  # Faust's own handling still runs
    app.commit()
    assert table.changelog == [(4, "s2", {"v": 1})]


def test_after_a_standstill_nothing_is_written_or_committed_for_a_session_timeout() -> None:
    app, table, writes, _, clock = _guarded(stall_s=6.0)
    app.commit()  # t=0: the last commit before the worker stood still
    writes.put("s1", {"v": 1}, 3)  # a state of a partition another worker has taken over
    writes.put("s2", {"v": 1}, 4)
    clock.now += 12.0  # SIGSTOP for 12 s: evicted from the group meanwhile
    app.commit()  # the overdue commit timer fires before the heartbeat reports the eviction
    assert table.changelog == [] and faust_fixes.commits_held(app, clock.now)
    app.rebalance(3)  # the heartbeat fails, the worker re-joins: partition 3 revoked
    clock.now += 1.0
    app.commit()
    assert table.changelog == []
    clock.now += 5.5  # the hold is over: what this worker still owns is written
    app.commit()
    assert not faust_fixes.commits_held(app, clock.now)
    assert table.changelog == [(4, "s2", {"v": 1})]


def test_a_steady_worker_is_never_held() -> None:
    app, table, writes, _, clock = _guarded(stall_s=6.0)
    for i in range(20):
        writes.put(f"s{i}", {"v": i}, i % 8)
        clock.now += 1.0
        app.commit()
        assert not faust_fixes.commits_held(app, clock.now)
    assert len(table.changelog) == 20
