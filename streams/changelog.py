"""A stateful stage's changelog: its pending writes, and a recovery that keeps the most advanced
state of each key.

Each key's latest state waits in `ChangelogWrites` (one record per key per commit: writing a
key's state after every batch that touched it sent one changelog record per input under load,
each its own record batch on the `tansu` profile), and `checkpoint.Checkpoint` writes them,
awaiting every delivery, before it commits the offsets of the inputs that made them.

A worker the group dropped while it kept running (it missed a rebalance) still writes until
its next heartbeat tells it, so two owners can write one key's states in the same second, and
the older may land last (the chaos run of 2026-12-04 lost a checkout that way:
docs/reliability.md, "Two owners at once"). So every record carries its **progress**: per
input topic, the highest offset applied to that key (`PROGRESS_FIELD`, runner.py keeps it), and
recovery (`keep_most_advanced`) skips a record that is strictly behind the one it already
holds for the key: the state every committed input went into is the most advanced one. When two
records are not comparable (each ahead on some topic: a zombie ahead on weights, the new owner
ahead on detections), the one applied last is kept and, for each topic on which the other was
further, the key's partition of that topic is **read again** from the kept state's progress
(`Replays`): the inputs the other owner applied, and maybe committed, are processed again on
the kept state, never skipped (every stage skips what its state says it applied).

What is put is a snapshot (`_Stored` in runner.py): the live state may change again before the
write, under a batch whose outputs are not yet acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable
from typing import Any

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


class Replays:
    """Input offsets a recovery found must be processed again: (topic, partition) -> the first
    offset to read. Kept until the stage's `InOrder` takes them (it starts the partition there
    instead of at the committed offset); a replay below what was processed costs only the
    reading, as the runner skips records a key's progress says it applied."""

    def __init__(self) -> None:
        self._from: dict[tuple[str, int], int] = {}

    def need(self, topic: str, partition: int, offset: int) -> None:
        where = (topic, partition)
        self._from[where] = min(offset, self._from.get(where, offset))

    def take(self, topic: str, partition: int) -> int | None:
        return self._from.pop((topic, partition), None)

    def __len__(self) -> int:
        return len(self._from)


def keep_most_advanced(table: Any, replays: Replays | None = None) -> None:
    """Recovery of `table` skips a changelog record strictly behind the value it already holds
    for its key (written late by an earlier owner); tombstones and every other record apply as
    Faust applies them, the last winning; where the last is behind the one it replaced on some
    topic (not comparable), that topic's partition is read again from the kept record's
    progress (`replays`)."""
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
            if value is not None and replays is not None:
                partition = _partition_of(value, event) or 0
                for topic, offset in held[key].items():
                    if mine.get(topic, -1) < offset:
                        replays.need(topic, partition, mine.get(topic, -1) + 1)
                        log.warning(
                            "%s: key %r recovered at %s[%d] %d, behind %d in a record it "
                            "replaced (two owners): reading again from %d",
                            getattr(table, "name", "table"),
                            key,
                            topic,
                            partition,
                            mine.get(topic, -1),
                            offset,
                            mine.get(topic, -1) + 1,
                        )
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


def _partition_of(value: Any, event: Any) -> int | None:
    """The partition a key's inputs come on: its record says (runner.py's `PARTITION_FIELD`),
    else the changelog partition it was read from (the same, by construction)."""
    record = getattr(value, "record", value)
    if isinstance(record, dict) and isinstance(record.get("_partition"), int):
        return int(record["_partition"])
    message = getattr(event, "message", None)
    return getattr(message, "partition", None)


Pending = dict[str, tuple[Any, int]]  # key -> (value, None: its tombstone; partition)


class ChangelogWrites:
    """One table's pending changelog records: each key's latest value (None: its tombstone)
    with the partition it goes to; `checkpoint.Checkpoint` takes and writes them."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._pending: Pending = {}

    def put(self, key: str, value: Any, partition: int) -> None:
        self._pending[key] = (value, partition)

    def forget(self, key: str, partition: int) -> None:
        self._pending[key] = (None, partition)

    def __len__(self) -> int:
        return len(self._pending)

    def take(self) -> Pending:
        """Every pending record, now no longer pending."""
        pending, self._pending = self._pending, {}
        return pending

    def restore(self, taken: Pending) -> None:
        """Records whose write failed are pending again, unless a newer one was put since."""
        self._pending = {**taken, **self._pending}

    async def send(self, key: str, value: Any, partition: int) -> Awaitable[Any]:
        """Produce one record to the table's changelog; the delivery to await (its metadata)."""
        table = self.table
        topic = table.changelog_topic
        raw_key, _ = topic.prepare_key(key, table.key_serializer)
        raw_value = None if value is None else topic.prepare_value(value, table.value_serializer)[0]
        delivery: Awaitable[Any] = await table.app.producer.send(
            topic.get_topic_name(), raw_key, raw_value, partition, None, None
        )
        return delivery

    def delivered(self, partition: int, metadata: Any) -> None:
        """A record is in the log (what Faust's own changelog callback records)."""
        tp = getattr(metadata, "topic_partition", None)
        if tp is not None:
            self.table.data.set_persisted_offset(tp, metadata.offset)

    def drop(self, partitions: set[int]) -> int:
        """Forget the pending records of `partitions` (revoked: their inputs are read again by
        their next owner); how many.

        The table keeps its states of those keys: Faust revokes every partition at a
        rebalance and recovers only the changelog records it has not read, so a partition it
        hands back would lose them. They may be ahead of the changelog now; the inputs read
        again after the rebalance touch their keys, and a touched key's state is stored and
        written again whether or not the stage changed it (runner.py), so the changelog
        catches up."""
        gone = [k for k, (_, p) in self._pending.items() if p in partitions]
        for key in gone:
            del self._pending[key]
        return len(gone)
