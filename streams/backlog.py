"""Deadlines wait for what is already in the log: a stage's backlog per partition.

A deadline is for data that never comes (a checkout's last weight packet, a step's frames). A
worker that is behind, after a restart or under load, has such data sitting unread in its
input partitions; firing the deadline then decides without it (seen: after a worker was
killed, sessions closed "after 30 s without weight packet 245" while those packets waited in
`cart.weights`). So a key's deadline tick is sent only while the stage has processed every
record its input partitions (of the key's partition) held, and the tick carries those ends; a
tick is acted on only if the stage has processed up to them (after a restart it may not have:
the tick came from the worker before it). A tick held back is sent again later.

Positions are the stage's own (`InOrder.expected`: the next offset it will process), else the
group's committed offset (a partition assigned but not yet read); ends are the high watermarks
of the consumer's last fetches. Whatever is unknown counts as behind, never as caught up: a
position not known while the log holds records, an end not fetched yet, a partition not
assigned to this worker (a worker that lost a partition at a rebalance still holds its keys'
states in memory; with no watermark to read it once took itself for caught up and fired their
deadlines early, beside the partition's new owner). Holding never changes what is decided,
only when: the backlog is read first, then the deadline fires.

A stage's backlog includes its **upstream** inputs (upstream.py): the topics another stage turns
into this one's inputs (reason's `cart.frames`, which detect turns into detections). A deadline
of reason waits until detect has processed the partition's frames to the end too, so a detect
stage that is behind (restarted, loading its model) delays reason's decisions instead of
changing them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from faust.types import TP

from cartstream.streams.upstream import Progress

log = logging.getLogger(__name__)

Ends = dict[str, int | None]  # input topic -> high watermark of one partition


def behind(positions: Mapping[str, int | None], ends: Mapping[str, int | None]) -> list[str]:
    """The topics (of one partition) whose log may end past the stage's position: `positions`
    the next offset to process (None: not known yet), `ends` the high watermark (None: not
    known, so maybe further on: behind)."""
    late = []
    for topic, end in ends.items():
        if end is None:
            late.append(topic)
            continue
        if end <= 0:
            continue
        position = positions.get(topic)
        if position is None or position < end:
            late.append(topic)
    return sorted(late)


def tick_value(ends: Ends, sent_ms: int) -> bytes:
    """A deadline tick's value: the input ends the stage had processed when it was sent, and
    when (wall clock, ms)."""
    return json.dumps({"ends": ends, "sent_ms": sent_ms}, sort_keys=True).encode()


def tick_ends(value: bytes | None) -> Ends | None:
    """The ends a tick was sent at; None for a tick without them (sent before they were)."""
    try:
        ends = json.loads(value or b"")["ends"]
    except (ValueError, TypeError, KeyError):
        return None
    return {str(t): (int(e) if e is not None else None) for t, e in ends.items()}


def tick_sent_ms(value: bytes | None) -> int | None:
    """When a tick was sent (None: a tick from before ticks said so)."""
    try:
        sent = json.loads(value or b"")["sent_ms"]
    except (ValueError, TypeError, KeyError):
        return None
    return int(sent) if isinstance(sent, int) else None


class Backlog:
    """Which of a stage's input partitions hold unprocessed records, from its consumer."""

    def __init__(
        self,
        app: Any,
        name: str,
        topics: Iterable[str],
        expected: dict[Any, int],
        upstream: Mapping[str, Progress] | None = None,
    ):
        self.app, self.name = app, name
        self.topics = sorted(topics)
        self.expected = expected  # InOrder's: partition -> the next offset the stage processes
        # `<topic>@<stage>` -> another stage's progress on a topic it turns into these inputs
        self.upstream = dict(upstream or {})
        self._held: set[int] = set()

    def owns(self, partition: int) -> bool:
        """Is every input topic's `partition` assigned to this worker now?"""
        try:
            assigned = self.app.consumer.assignment()
        except Exception:  # no consumer yet, or one between assignments
            return False
        return all(TP(topic, partition) in assigned for topic in self.topics)

    def ends(self, partition: int) -> Ends:
        """The high watermark of each input topic's `partition` (None: not assigned here or not
        fetched yet: unknown)."""
        found: Ends = {}
        for topic in self.topics:
            try:
                found[topic] = self.app.consumer.highwater(TP(topic, partition))
            except Exception:  # not assigned here (a rebalance under way)
                found[topic] = None
        for label, progress in self.upstream.items():
            found[label] = progress.end(partition)
        return found

    def positions(self, partition: int) -> dict[str, int | None]:
        consumer, positions = self.app.consumer, {}
        for topic in self.topics:
            tp = TP(topic, partition)
            position = self.expected.get(tp)
            positions[topic] = (
                position if position is not None else consumer._committed_offset.get(tp)
            )
        for label, progress in self.upstream.items():
            positions[label] = progress.position(partition)
        return positions

    def caught_up(self, partition: int) -> Ends | None:
        """The ends of `partition` if this worker owns it and has processed everything up to
        them, else None (logged when a partition starts holding its deadlines back, and when it
        stops)."""
        if not self.owns(partition):
            return None
        ends, positions = self.ends(partition), self.positions(partition)
        late = behind(positions, ends)
        if late and partition not in self._held:
            self._held.add(partition)
            log.info(
                "%s: deadlines of partition %d wait for records not processed yet: %s",
                self.name,
                partition,
                ", ".join(f"{t}[{partition}] at {positions[t]} of {ends[t]}" for t in late),
            )
        elif not late and partition in self._held:
            self._held.discard(partition)
            log.info("%s: partition %d caught up; its deadlines fire again", self.name, partition)
        return None if late else ends

    def short_of(self, partition: int, ends: Mapping[str, int | None]) -> list[str]:
        """The input topics whose `partition` the stage has not processed up to `ends` yet."""
        return behind(self.positions(partition), ends)
