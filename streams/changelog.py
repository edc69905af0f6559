"""A stateful stage's changelog writes, held back until the consumer commits.

At-least-once needs one ordering only: a key's state reaches the changelog before the offsets
of the inputs that made it are committed (else a crash after the commit would restore an older
state and never re-read those inputs). Faust commits every `broker_commit_interval`; writing a
key's state after every batch that touches it (the earlier design) sent one changelog record
per input under load, each its own record batch on the `tansu` profile, and a busy session is
touched by several batches a second. Here each key's latest state waits in `ChangelogWrites`
and is handed to the producer when the consumer starts a commit (`on_commit_initiated`, a Faust
sensor hook), and Faust's commit flushes the producer before it commits the offsets
(`Consumer._commit_offsets`). So a key is written once per commit, and the ordering holds:

- a batch's states are put here before its inputs are acknowledged, and the offsets a commit
  takes are computed after this hook, synchronously, so every committed offset's state was
  handed to the producer first;
- a crash loses only states whose inputs were not committed: they are read and applied again.

A worker must also never write a state *after* another worker took the partition over and
wrote newer ones: the changelog's last record is what the next recovery restores, while the
committed offsets have moved past the inputs that record lacks. Two guards:

- **Revoked partitions.** At a rebalance Faust forgets the acknowledgements of the partitions
  it revokes (`Consumer.on_partitions_revoked`), so their pending inputs are never committed by
  this worker; their pending states are dropped there too (`ChangelogWrites.drop`). Whoever
  owns a partition next recovers it from the last commit's states and reads on from there.
- **A worker that stood still.** A worker stopped for longer than the group's session timeout
  (SIGSTOP, a frozen VM) has been evicted and does not know it until its next heartbeat; the
  commit timer, overdue, may fire first. So a commit that starts more than a session timeout
  after the previous one (`CommitGuard`) writes nothing and commits nothing
  (`faust_fixes.commits_held`) for one session timeout: long enough for the heartbeat to
  report the eviction and the revocation to drop what is pending. A worker that was only slow
  resumes after that, having lost nothing but the wait.

A worker the group dropped while it kept running (it missed a rebalance) still writes until
its next heartbeat tells it, so two owners can write one key's states in the same second, and
the older may land last (the chaos run of 2026-12-04 lost a checkout that way:
docs/reliability.md, "Two owners at once"). So every record carries its **progress**: per
input topic, the highest offset applied to that key (`PROGRESS_FIELD`, runner.py keeps it), and
recovery (`keep_most_advanced`) skips a record that is strictly behind the one it already
holds for the key: the state every committed input went into is the most advanced one. Records
that are not comparable (each ahead on some topic) keep Faust's rule, the last wins.

What is put is a snapshot (`_Stored` in runner.py): the live state may change again before the
write, under a batch whose outputs are not yet acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from faust.sensors import Sensor

from cartstream.streams import faust_fixes

log = logging.getLogger(__name__)

PROGRESS_FIELD = "_progress"  # in a stored record: {input topic: highest offset applied}


def progress_of(value: Any) -> dict[str, int]:
    """A changelog value's progress ({} for a tombstone or a record from before progress)."""
    record = getattr(value, "record", value)
    found = record.get(PROGRESS_FIELD) if isinstance(record, dict) else None
    return dict(found) if isinstance(found, dict) else {}


def behind(a: dict[str, int], b: dict[str, int]) -> bool:
    """Is progress `a` strictly behind `b` (nothing further on any topic, and not equal)?"""
    return bool(b) and a != b and all(a.get(t, -1) <= b.get(t, -1) for t in a.keys() | b.keys())


def keep_most_advanced(table: Any) -> None:
    """Recovery of `table` skips a changelog record strictly behind the value it already holds
    for its key (written late by an earlier owner); tombstones and every other record apply as
    Faust applies them, the last winning."""
    apply = table.apply_changelog_batch

    def apply_changelog_batch(batch: Iterable[Any]) -> None:
        held: dict[Any, dict[str, int]] = {}
        kept, skipped = [], 0
        for event in batch:
            key, value = event.key, event.value
            if key not in held:
                held[key] = progress_of(table.data.get(key))
            mine = progress_of(value)
            if value is not None and behind(mine, held[key]):
                skipped += 1
                continue
            held[key] = mine
            kept.append(event)
        if skipped:
            log.warning(
                "%s: recovery skipped %d changelog records behind the state already held for "
                "their key (this worker's own, or one an earlier owner wrote late)",
                getattr(table, "name", "table"),
                skipped,
            )
        apply(kept)

    table.apply_changelog_batch = apply_changelog_batch


class ChangelogWrites:
    """One table's pending changelog records: each key's latest value (None: its tombstone)
    with the partition it goes to."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._pending: dict[str, tuple[Any, int]] = {}

    def put(self, key: str, value: Any, partition: int) -> None:
        self._pending[key] = (value, partition)

    def forget(self, key: str, partition: int) -> None:
        self._pending[key] = (None, partition)

    def __len__(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Hand every pending record to the producer (Faust's buffer); how many."""
        pending, self._pending = self._pending, {}
        for key, (value, partition) in pending.items():
            if value is None:
                self.table.send_changelog(partition, key, value=None, value_serializer="raw")
            else:
                self.table.send_changelog(partition, key, value)
        return len(pending)

    def drop(self, partitions: set[int]) -> int:
        """Forget the pending records of `partitions` (revoked: their inputs are read again by
        their next owner); how many."""
        gone = [k for k, (_, p) in self._pending.items() if p in partitions]
        for key in gone:
            del self._pending[key]
        return len(gone)


class CommitGuard(Sensor):  # type: ignore[misc]
    """Writes every table's pending records when the consumer starts a commit, before it
    takes the offsets to commit; drops those of revoked partitions; and after a standstill
    longer than `stall_s` holds both writes and commits for `stall_s` (module docstring)."""

    def __init__(self, app: Any, stall_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.stall_s = stall_s
        self.writes: list[ChangelogWrites] = []
        self.last_commit: float | None = None
        self.clock: Callable[[], float] = time.monotonic

    def on_commit_initiated(self, consumer: Any) -> None:
        now = self.clock()
        last, self.last_commit = self.last_commit, now
        if last is not None and now - last > self.stall_s:
            log.warning(
                "no commit for %.1f s (more than the session timeout): this worker may have "
                "been evicted from its group; holding changelog writes and commits for %.1f s",
                now - last,
                self.stall_s,
            )
            faust_fixes.hold_commits(self.app, now + self.stall_s)
        if faust_fixes.commits_held(self.app, now):
            return
        for writes in self.writes:
            writes.flush()

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        partitions = {tp.partition for tp in revoked}
        dropped = sum(writes.drop(partitions) for writes in self.writes)
        if dropped:
            log.info("dropped %d pending changelog writes of revoked partitions", dropped)


def guard_commits(app: Any, writes: ChangelogWrites, stall_s: float) -> CommitGuard:
    """Register `writes` with the app's one `CommitGuard` (added on first use, with the
    revocation hook on the app's table manager, which Faust calls before it commits)."""
    guard = next((s for s in app.sensors if isinstance(s, CommitGuard)), None)
    if guard is None:
        guard = CommitGuard(app, stall_s)
        app.sensors.add(guard)
        manager = app.tables
        revoked = manager.on_partitions_revoked

        def on_partitions_revoked(tps: set[Any]) -> None:
            guard.on_partitions_revoked(tps)
            revoked(tps)

        manager.on_partitions_revoked = on_partitions_revoked
    guard.writes.append(writes)
    return guard
