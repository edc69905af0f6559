"""A stateful stage's changelog writes wait for the consumer's commit (streams/changelog.py):
written when a commit starts; dropped for partitions a rebalance revokes; after the worker
stood still longer than a session timeout, neither written nor committed until the group has
had time to say whether the worker still owns its partitions; and recovery keeps each key's
most advanced state, not the last written."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.sensors.base import SensorDelegate
from faust.types import TP

from cartstream.streams import faust_fixes
from cartstream.streams.changelog import (
    PROGRESS_FIELD,
    ChangelogWrites,
    CommitGuard,
    behind,
    guard_commits,
    keep_most_advanced,
    progress_of,
)
from tests.fake_clock import Clock


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


class Event:
    def __init__(self, key: str, value: Any) -> None:
        self.key, self.value = key, value


class RecoveringTable:
    """A table as Faust recovers it: each changelog record applied in order, the last wins."""

    name = "reason-state"

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def apply_changelog_batch(self, batch: list[Event]) -> None:
        for event in batch:
            if event.value is None:
                self.data.pop(event.key, None)
            else:
                self.data[event.key] = event.value


def _state(weights: int, sessions: int | None, closing: bool) -> dict[str, Any]:
    progress = {"cart.weights": weights}
    if sessions is not None:
        progress["cart.sessions"] = sessions
    return {"pending": "CHECKOUT_REQUESTED" if closing else None, PROGRESS_FIELD: progress}


def test_recovery_keeps_the_most_advanced_state_not_the_last_written() -> None:
    """The chaos run of 2026-12-04: two owners wrote one session's states within a second and
    the older (no checkout request, packets to 167) landed after the newer (packets to 241 and
    the request); recovery must keep the newer one, whose inputs are committed."""
    table = RecoveringTable()
    keep_most_advanced(table)
    table.apply_changelog_batch([Event("s", _state(99, None, False))])
    table.apply_changelog_batch(
        [
            Event("s", _state(102, 2358, True)),
            Event("s", _state(164, None, False)),  # the other owner, catching up: not comparable
            Event("s", _state(241, 2358, True)),
            Event("s", _state(167, None, False)),  # late, and behind: skipped
        ]
    )
    assert table.data["s"][PROGRESS_FIELD] == {"cart.weights": 241, "cart.sessions": 2358}
    table.apply_changelog_batch([Event("s", _state(160, 2358, True))])  # behind again: skipped
    assert table.data["s"][PROGRESS_FIELD]["cart.weights"] == 241
    table.apply_changelog_batch([Event("s", _state(250, 2358, True))])  # further on: applied
    assert table.data["s"][PROGRESS_FIELD]["cart.weights"] == 250
    table.apply_changelog_batch([Event("s", None), Event("t", _state(1, None, False))])
    assert "s" not in table.data and table.data["t"]  # tombstones apply as Faust applies them


def test_progress_ordering() -> None:
    assert behind({"a": 1}, {"a": 2})
    assert behind({"a": 1}, {"a": 1, "b": 0})
    assert not behind({"a": 2}, {"a": 2})  # equal: the last wins, as before
    assert not behind({"a": 3, "b": 0}, {"a": 2, "b": 5})  # not comparable
    assert not behind({"a": 1}, {})  # a record from before progress never wins by it
    assert progress_of(None) == {} and progress_of({"x": 1}) == {}
