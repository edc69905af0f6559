"""Runs a `Stage` as a Faust agent: decode, validate, dead-letter, handle, publish, store state.

Order of effects per input (at-least-once without transactions):
1. outputs are published and their acks awaited;
2. only then the key's new state is written to the table (its changelog);
3. Faust commits the input offset after that.
A crash between any two steps re-delivers the input; stages skip what their state says they
applied, and every output id is derived from its inputs, so downstream dedupe absorbs repeats.

Deadlines (a checkout waiting for its last weight packet, a review that never came) cannot write
a Faust table from a timer, so a timer sends a `tick` for the key to the stage's own tick topic
(same partition as the key's state), and the agent handles it like any input.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from opentelemetry.trace import SpanKind

from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.core.telemetry import (
    mark_error,
    tracer,
)
from cartstream.core.topics import changelog_topic_name, tick_topic_name
from cartstream.exceptions import StoreUnavailable
from cartstream.streams.in_order import InOrder
from cartstream.streams.ingress import Ingress
from cartstream.streams.publish import Publisher, inbound_from, record_processed
from cartstream.streams.stage import Inbound, Sink, Stage
from cartstream.streams.tracing import process_span

log = logging.getLogger(__name__)


PARTITION_FIELD = "_partition"
TICK_RESEND_MS = 5_000
RETRY_FIRST_S = 0.5  # a sink's first retry while its store is unavailable ...
RETRY_MAX_S = 10.0  # ... doubling up to this


class _Stored:
    """A table value: the stage's typed state, the partition its key's inputs come on (a tick
    goes there), and the changelog record of that state *as it was when stored*.

    Faust serialises a changelog record when its producer gets to it, which can be after the
    next input has already changed the (mutable) state. A record holding the live object could
    then carry effects whose outputs were not yet published, and after a crash the stage would
    skip the re-delivered input as applied while its outputs were never sent. So the record is
    a snapshot taken at `_store`, after the outputs were acknowledged; the live object serves
    the next input without being read back. A recovered value comes back as that dict and is
    loaded by `StageRunner._load`."""

    __slots__ = ("partition", "record", "state")

    def __init__(self, state: Any, partition: int, dump: Callable[[Any], dict[str, Any]]) -> None:
        self.state = state
        self.partition = partition
        self.record = {**dump(state), PARTITION_FIELD: partition}

    @classmethod
    def recovered(cls, state: Any, record: dict[str, Any]) -> _Stored:
        """A value read back from the changelog: the record is its own snapshot."""
        stored = cls.__new__(cls)
        stored.state, stored.record = state, record
        stored.partition = int(record.get(PARTITION_FIELD, 0))
        return stored

    def __json__(self) -> dict[str, Any]:
        return self.record


def in_order(app: faust.App, name: str, topics: Iterable[str]) -> InOrder:
    """An `InOrder` for the agent `name` consuming `topics`: started afresh at every rebalance,
    and checked for partitions whose records stopped coming every `InOrder.RESEEK_S`."""
    guard = InOrder(app, name, topics)

    async def _reset(sender: object, *_: object, **__: object) -> None:
        guard.reset()

    app.on_partitions_revoked.connect(_reset)
    app.timer(interval=InOrder.RESEEK_S, name=f"{name}-in-order")(guard.check)
    return guard


class _InputRunner:
    """What every consuming runner does per input: decode and validate, dead-letter what fails
    (marking the `process <topic>` span Faust's sensor opened), else `_apply`; then count it."""

    def __init__(
        self, app: faust.App, node: Stage[Any] | Sink, settings: Settings, publisher: Publisher
    ) -> None:
        self.app = app
        self.node = node
        self.settings = settings
        self.publisher = publisher
        self.codec = publisher.codec
        self.ingress = Ingress(settings, publisher.codec, node)
        self.in_order = in_order(app, node.name, self.input_topics())

    def input_topics(self) -> list[str]:
        """What the agent consumes (and `InOrder` watches)."""
        return [*self.node.inputs().keys()]

    async def handle(self, msg: Any) -> None:
        if not await self.in_order.admit(msg):
            return
        started = time.perf_counter()
        inbound = inbound_from(msg)
        now = now_ms()
        span = process_span()
        span.set_attribute("cartstream.stage", self.node.name)
        admitted = self.ingress.admit(inbound, msg.value, now)
        for out in admitted.outputs:
            if out.topic == self.settings.topics.dead_letters:
                mark_error(span, str(out.record["reason"]), str(out.record["error_type"]))
        if admitted.outputs:
            await self.publisher.publish(admitted.outputs, self.node.name)
        if admitted.record is not None:
            await self._apply(admitted.record, inbound, now)
        record_processed(self.node.name, msg.topic, started, admitted.record is None)

    async def _apply(self, record: Mapping[str, Any], inbound: Inbound, now: int) -> None:
        raise NotImplementedError


class StageRunner(_InputRunner):
    def __init__(
        self, app: faust.App, stage: Stage[Any], settings: Settings, publisher: Publisher
    ) -> None:
        self.stage = stage  # before the base class asks for `input_topics`
        super().__init__(app, stage, settings, publisher)
        partitions = settings.topics.stream_partitions
        self.tick_topic_name = tick_topic_name(settings.app_id, stage.name)
        self.table: Any = None
        self.tick_topic: Any = None
        if stage.stateful:
            self.tick_topic = app.topic(
                self.tick_topic_name,
                partitions=partitions,
                value_serializer="raw",
                key_serializer="raw",
            )
            changelog = app.topic(
                changelog_topic_name(settings.app_id, stage.name),
                partitions=partitions,
                key_serializer="json",
                value_serializer="json",
                compacting=True,
            )
            self.table = app.Table(
                f"{stage.name}-state",
                default=None,
                partitions=partitions,
                changelog_topic=changelog,
                key_type=str,
                value_type=dict,
            )
            app.timer(interval=1.0, name=f"{stage.name}-deadlines")(self._send_ticks)
        self.topic = app.topic(*self.input_topics(), value_serializer="raw", key_serializer="raw")
        self._ticked: dict[str, int] = {}
        self.in_order.agent = app.agent(self.topic, name=stage.name, concurrency=1)(self._run)

    def input_topics(self) -> list[str]:
        names = super().input_topics()
        if self.stage.stateful:
            names.append(tick_topic_name(self.settings.app_id, self.stage.name))
        return names

    async def _run(self, stream: faust.StreamT) -> None:
        log.info("%s: consuming %s", self.stage.name, ", ".join(self.stage.inputs()))
        async for event in stream.events():
            await self.handle(event.message)

    async def handle(self, msg: Any) -> None:
        """One input, inside the `process <topic>` span Faust's sensor opened for it."""
        if msg.topic == self.tick_topic_name:
            if await self.in_order.admit(msg):  # commits need every partition in order
                await self._on_tick((msg.key or b"").decode(), now_ms())
            return
        await super().handle(msg)

    async def _apply(self, record: Mapping[str, Any], inbound: Inbound, now: int) -> None:
        # the record's ids are on its `send` span, the parent of this one
        key = self.stage.state_key(record)
        stored = self._load(key)
        result = self.stage.handle(stored.state if stored else None, record, inbound, now)
        await self.publisher.publish(result.outputs, self.stage.name)
        self._store(key, result.state, inbound.partition)

    async def _on_tick(self, key: str, now: int) -> None:
        self._ticked.pop(key, None)
        stored = self._load(key)
        if stored is None or not self.stage.needs_tick(stored.state, now):
            return
        result = self.stage.tick(stored.state, now)
        await self.publisher.publish(result.outputs, self.stage.name)
        self._store(key, result.state, stored.partition)

    def _load(self, key: str) -> _Stored | None:
        """The key's typed state: as this process left it, or read back from the changelog
        (a dict) after a recovery, and then kept typed."""
        if self.table is None:
            return None
        value = self.table.get(key)
        if value is None or isinstance(value, _Stored):
            return value
        stored = _Stored.recovered(self.stage.load_state(value), value)
        self.table.data[key] = stored  # the same value, typed: no changelog write
        return stored

    def _store(self, key: str, state: Any, partition: int) -> None:
        if self.table is None:
            return
        if state is None:
            if key in self.table:
                del self.table[key]
            return
        self.table[key] = _Stored(state, partition, self.stage.dump_state)

    async def _send_ticks(self) -> None:
        now = now_ms()
        for key in list(self.table.keys()):
            stored = self._load(key)
            if stored is None or not self.stage.needs_tick(stored.state, now):
                continue
            if now - self._ticked.get(key, 0) < TICK_RESEND_MS:
                continue
            self._ticked[key] = now
            await self.tick_topic.send(
                key=str(key).encode(), value=b"tick", partition=stored.partition
            )


class SinkRunner(_InputRunner):
    """Runs a `Sink`: each record written in a worker thread inside a CLIENT span (its
    `operation`), one at a time and in order. While the store is unavailable the same record is
    retried with backoff, so its offset (and every later one) stays uncommitted: nothing is
    skipped, and the worker's other agents keep running. A rebalance during the retries ends
    them without committing the record (it comes again). The agent never raises: Faust would
    restart it and acknowledge the record it died on."""

    def __init__(
        self, app: faust.App, sink: Sink, settings: Settings, publisher: Publisher
    ) -> None:
        super().__init__(app, sink, settings, publisher)
        self.sink = sink
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=sink.name)
        topic = app.topic(*self.input_topics(), value_serializer="raw", key_serializer="raw")
        self.in_order.agent = app.agent(topic, name=sink.name, concurrency=1)(self._run)

    async def _run(self, stream: faust.StreamT) -> None:
        log.info("%s: writing %s", self.sink.name, ", ".join(self.sink.inputs()))
        async for event in stream.events():
            await self.handle(event.message)

    async def _apply(self, record: Mapping[str, Any], inbound: Inbound, now: int) -> None:
        name, attributes = self.sink.operation(inbound)
        loop = asyncio.get_running_loop()
        delay = RETRY_FIRST_S
        while True:
            with tracer().start_as_current_span(
                name, kind=SpanKind.CLIENT, attributes=attributes
            ) as span:
                try:
                    new = await loop.run_in_executor(
                        self.executor, self.sink.write, record, inbound
                    )
                except StoreUnavailable as exc:
                    mark_error(span, str(exc), "UNAVAILABLE")
                    log.warning(
                        "%s: %s; retrying %s[%d]@%d in %.1f s",
                        self.sink.name,
                        exc,
                        inbound.topic,
                        inbound.partition,
                        inbound.offset,
                        delay,
                    )
                else:
                    span.set_attribute("cartstream.inserted", bool(new))
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            if not self.app.flow_control.is_active():
                # a rebalance waits for this record: give it up here; its acknowledgement is
                # not committable (faust_fixes), so it is delivered again, to this worker or
                # to the partition's next owner
                log.warning(
                    "%s: rebalancing; %s[%d]@%d will be delivered again",
                    self.sink.name,
                    inbound.topic,
                    inbound.partition,
                    inbound.offset,
                )
                return

    def close(self) -> None:
        self.executor.shutdown(wait=True)
