"""How far an upstream stage has processed its input: what a downstream deadline waits for.

A deadline is for data that never comes. Reason's steps wait for the detections of the frames
the cart sent before them, and the detections come from another stage: after a worker restart
the detect stage can be minutes behind its frames while reason has read all its own inputs, and
a wall-clock wait then decided steps without frames that were sitting in `cart.frames`
(issue 38: 22 of 52 honest checkouts sent to review with wrong items after 5 SIGKILLs). The same
holds for reconcile, whose checkouts wait for the anomaly stage's review of the session. So a
stage names its upstream inputs (`upstream()`: topic -> the stage that consumes it), and its
deadlines fire only while that stage has processed its topic's partition to the end
(backlog.py, where each is named `<topic>@<stage>`). Two sources of that progress:

- `LocalProgress`: the upstream stage runs in this worker (the group topology): its own next
  offset (`InOrder.expected`) against the high watermark this consumer fetched;
- `GroupProgress`: it runs in another consumer group (the chart's Deployment per role): that
  group's committed offsets against the log's end offsets, asked of the broker at most once a
  `REFRESH_S` while a deadline waits for it (kafka-python, in a thread); unknown until the
  first answer, so behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from faust.types import TP

from cartstream.core.settings import Settings

log = logging.getLogger(__name__)

_REGISTRY = "_cartstream_in_order"
FETCH_WAIT_MS = 500  # app attribute: stage name -> its InOrder


class Progress(Protocol):
    """Position (the next offset the upstream stage processes) and end of one partition of its
    topic; None: not known."""

    def position(self, partition: int) -> int | None: ...

    def end(self, partition: int) -> int | None: ...


def register(app: Any, stage: str, guard: Any) -> None:
    """Record a stage's `InOrder` on its app, for a downstream stage in the same worker."""
    registry: dict[str, Any] = getattr(app, _REGISTRY, None) or {}
    registry[stage] = guard
    setattr(app, _REGISTRY, registry)


def local_stage(app: Any, stage: str) -> Any:
    """The `InOrder` of `stage` if it runs in this app, else None."""
    return (getattr(app, _REGISTRY, None) or {}).get(stage)


class LocalProgress:
    def __init__(self, app: Any, topic: str, guard: Any) -> None:
        self.app, self.topic, self.guard = app, topic, guard

    def position(self, partition: int) -> int | None:
        tp = TP(self.topic, partition)
        found = self.guard.expected.get(tp)
        if found is None:
            found = self.app.consumer._committed_offset.get(tp)
        return int(found) if found is not None else None

    def end(self, partition: int) -> int | None:
        try:
            end = self.app.consumer.highwater(TP(self.topic, partition))
        except Exception:  # not assigned here (a rebalance under way)
            return None
        return int(end) if end is not None else None


class GroupProgress:
    """Another consumer group's progress on one topic, refreshed by `refresh` (a timer)."""

    REFRESH_S = 1.0
    STALE_S = 3.0

    def __init__(
        self,
        settings: Settings,
        topic: str,
        group: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.topic, self.group = settings, topic, group
        self.clock = clock
        self._committed: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._asked = float("-inf")
        self._answered_at = float("-inf")
        self._clients: tuple[Any, Any] | None = None
        self.failed = 0
        self.wanted = False  # a deadline asked for the progress since the last refresh

    def position(self, partition: int) -> int | None:
        self.wanted = True
        return self._committed.get(partition) if self._fresh() else None

    def end(self, partition: int) -> int | None:
        self.wanted = True
        return self._ends.get(partition) if self._fresh() else None

    def _fresh(self) -> bool:
        """An answer older than `STALE_S` (no deadline asked for a while) says nothing about
        now: unknown, so behind, until the next refresh."""
        return self.clock() - self._answered_at <= self.STALE_S

    async def refresh(self) -> None:
        """Ask the broker again, if a deadline asked for the progress since the last time (a
        worker with no deadline due asks nothing) and at most once a `REFRESH_S`; an error
        keeps what was known and is logged once per streak. Never raises (a timer that raises
        stops the worker)."""
        now = self.clock()
        if not self.wanted or now - self._asked < self.REFRESH_S:
            return
        self.wanted = False
        self._asked = now
        try:
            committed, ends = await asyncio.to_thread(self._ask)
        except Exception as exc:
            if not self.failed:
                log.warning("progress of group %s on %s unknown: %s", self.group, self.topic, exc)
            self.failed += 1
            return
        if self.failed:
            log.info("progress of group %s on %s known again", self.group, self.topic)
        self.failed = 0
        self._committed, self._ends = committed, ends
        self._answered_at = self.clock()

    def _ask(self) -> tuple[dict[int, int], dict[int, int]]:
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

        if self._clients is None:
            config = self.settings.kafka.kafka_python_config()
            self._clients = (KafkaAdminClient(**config), KafkaConsumer(**config))
        admin, consumer = self._clients
        partitions = consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        if hasattr(admin, "list_group_offsets"):  # kafka-python 3
            offsets = admin.list_group_offsets({self.group: tps}).get(self.group, {})
        else:  # kafka-python 2.2
            offsets = admin.list_consumer_group_offsets(self.group, partitions=tps)
        committed = {tp.partition: int(m.offset) for tp, m in offsets.items() if m.offset >= 0}
        ends = {tp.partition: int(end) for tp, end in consumer.end_offsets(tps).items()}
        if self.settings.tuning.end_offsets_from_fetch:
            # the test broker lists the newest batch's first offset + 1 as a log's end
            # (broker_workarounds.py): a fetch from there reports the true high watermark
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, max(0, ends.get(tp.partition, 0) - 1))
            consumer.poll(timeout_ms=FETCH_WAIT_MS, max_records=1)
            for tp in tps:
                high = consumer.highwater(tp)
                if high is not None and high > ends.get(tp.partition, 0):
                    ends[tp.partition] = int(high)
        return committed, ends

    def close(self) -> None:
        if self._clients is not None:
            for client in self._clients:
                client.close()
            self._clients = None


class UpstreamProgress:
    """One upstream stage's progress on one topic, from this worker when the stage runs here
    (`LocalProgress`, looked up at each use: the worker builds its stages in turn), else from
    its consumer group (`GroupProgress`, refreshed by `refresh` on a timer)."""

    def __init__(self, app: Any, settings: Settings, topic: str, stage: str, group: str) -> None:
        self.app, self.topic, self.stage = app, topic, stage
        self.remote = GroupProgress(settings, topic, group)
        self._local: LocalProgress | None = None

    def _source(self) -> Progress:
        if self._local is None:
            guard = local_stage(self.app, self.stage)
            if guard is not None:
                self._local = LocalProgress(self.app, self.topic, guard)
        return self._local if self._local is not None else self.remote

    def position(self, partition: int) -> int | None:
        return self._source().position(partition)

    def end(self, partition: int) -> int | None:
        return self._source().end(partition)

    async def refresh(self) -> None:
        if self._source() is self.remote:
            await self.remote.refresh()
