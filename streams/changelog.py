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
- a crash loses only states whose inputs were not committed: they are read and applied again;
- a rebalance commits (`Consumer.wait_empty`) before another worker recovers the table.

What is put is a snapshot (`_Stored` in runner.py): the live state may change again before the
write, under a batch whose outputs are not yet acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.sensors import Sensor


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


class FlushBeforeCommit(Sensor):  # type: ignore[misc]
    """Calls each registered flush when the consumer starts a commit, before it takes the
    offsets to commit."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flushes: list[Callable[[], int]] = []

    def on_commit_initiated(self, consumer: Any) -> None:
        for flush in self.flushes:
            flush()


def flush_before_commit(app: Any, writes: ChangelogWrites) -> None:
    """Register `writes` with the app's one `FlushBeforeCommit` sensor (added on first use)."""
    sensor = next((s for s in app.sensors if isinstance(s, FlushBeforeCommit)), None)
    if sensor is None:
        sensor = FlushBeforeCommit()
        app.sensors.add(sensor)
    sensor.flushes.append(writes.flush)
