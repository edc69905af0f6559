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
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import faust
from opentelemetry.trace import SpanKind

from cartstream.core.ids import EVENT_ID_HEADER, TRACEPARENT, now_ms
from cartstream.core.metrics import instruments, reason_label
from cartstream.core.settings import Settings
from cartstream.core.telemetry import (
    current_traceparent,
    mark_error,
    message_span,
    record_attributes,
    tracer,
)
from cartstream.core.topics import changelog_topic_name, tick_topic_name
from cartstream.exceptions import StoreUnavailable
from cartstream.schemas.codec import AvroCodec
from cartstream.streams.deadletter import decode_for_stage
from cartstream.streams.stage import Inbound, Outbound, Sink, Stage
from cartstream.streams.tracing import process_span

log = logging.getLogger(__name__)

PARTITION_FIELD = "_partition"
TICK_RESEND_MS = 5_000
RETRY_FIRST_S = 0.5  # a sink's first retry while its store is unavailable ...
RETRY_MAX_S = 10.0  # ... doubling up to this


def inbound_from(msg: Any) -> Inbound:
    """Where a Faust message came from, as stages see it."""
    raw = msg.headers or {}
    items = raw.items() if isinstance(raw, dict) else raw
    headers = {str(k): bytes(v) if v is not None else b"" for k, v in items}
    return Inbound(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        timestamp_ms=int((msg.timestamp or 0) * 1000),
        headers=headers,
    )


class Publisher:
    """Encodes Outbounds and sends them, waiting for the broker's acks.

    Each output gets a `send <topic>` span (a child of `Outbound.traceparent`, or of the input
    being processed) linked to `Outbound.links`, and that span's context as its one
    `traceparent` header. Dead letters are counted by stage and reason here, where all pass.
    """

    def __init__(self, app: faust.App, codec: AvroCodec, dead_letters: str = "") -> None:
        self.app = app
        self.codec = codec
        self.dead_letters = dead_letters
        self._topics: dict[str, faust.TopicT] = {}

    def topic(self, name: str) -> faust.TopicT:
        if name not in self._topics:
            self._topics[name] = self.app.topic(name, value_serializer="raw", key_serializer="raw")
        return self._topics[name]

    async def publish(
        self, outputs: Iterable[Outbound], stage: str, links: tuple[bytes, ...] = ()
    ) -> None:
        futures = []
        for out in outputs:
            headers = self.codec.headers(out.schema)
            event_id = (
                out.record.get("event_id")
                or out.record.get("checkout_id")
                or out.record.get("anomaly_id")
            )
            if event_id:
                headers.append((EVENT_ID_HEADER, str(event_id).encode()))
            attributes = {
                "messaging.kafka.message.key": out.key,
                "cartstream.stage": stage,
                **record_attributes(out.record),
            }
            if event_id:
                attributes["messaging.message.id"] = str(event_id)
            if out.topic == self.dead_letters:
                self._count_dead_letter(out)
            with message_span(
                "send",
                out.topic,
                parent=out.traceparent,
                kind=SpanKind.PRODUCER,
                attributes=attributes,
                links=(*out.links, *links),
            ) as span:
                if out.topic == self.dead_letters:
                    mark_error(span, str(out.record["reason"]), str(out.record["error_type"]))
                trace = current_traceparent()
                if trace:
                    headers.append((TRACEPARENT, trace))
                fut = await self.topic(out.topic).send(
                    key=out.key.encode(),
                    value=self.codec.encode(out.schema, out.record),
                    headers=headers,
                )
            futures.append(fut)
        if futures:
            await asyncio.gather(*futures)

    @staticmethod
    def _count_dead_letter(out: Outbound) -> None:
        instruments().dead_letters.add(
            1,
            {
                "stage": str(out.record.get("stage")),
                "error_type": str(out.record.get("error_type")),
                "reason": reason_label(str(out.record.get("reason", ""))),
            },
        )


@dataclass
class _Stored:
    """A table value: the stage's typed state and the partition its key's inputs come on (a
    tick goes there). Faust's JSON serialiser writes `__json__()` to the changelog; a recovered
    value comes back as that dict and is loaded by `StageRunner._load`."""

    state: Any
    partition: int
    dump: Callable[[Any], dict[str, Any]]

    def __json__(self) -> dict[str, Any]:
        return {**self.dump(self.state), PARTITION_FIELD: self.partition}


class _InputRunner:
    """What every consuming runner does per input: decode and validate, dead-letter what fails
    (marking the `process <topic>` span Faust's sensor opened), else `_apply`; then count it."""

    def __init__(self, node: Stage[Any] | Sink, settings: Settings, publisher: Publisher) -> None:
        self.node = node
        self.settings = settings
        self.publisher = publisher
        self.codec = publisher.codec

    async def handle(self, msg: Any) -> None:
        started = time.perf_counter()
        inbound = inbound_from(msg)
        now = now_ms()
        span = process_span()
        span.set_attribute("cartstream.stage", self.node.name)
        decoded = decode_for_stage(
            self.node, self.codec, inbound, msg.value, now, self.settings.topics.dead_letters
        )
        if isinstance(decoded, Outbound):
            mark_error(span, str(decoded.record["reason"]), str(decoded.record["error_type"]))
            await self.publisher.publish([decoded], self.node.name)
        else:
            await self._apply(decoded, inbound, now)
        record_processed(self.node.name, msg.topic, started, isinstance(decoded, Outbound))

    async def _apply(self, record: Mapping[str, Any], inbound: Inbound, now: int) -> None:
        raise NotImplementedError


class StageRunner(_InputRunner):
    def __init__(
        self, app: faust.App, stage: Stage[Any], settings: Settings, publisher: Publisher
    ) -> None:
        super().__init__(stage, settings, publisher)
        self.app = app
        self.stage = stage
        partitions = settings.topics.stream_partitions
        self.tick_topic_name = tick_topic_name(settings.app_id, stage.name)
        names = [*stage.inputs().keys()]
        self.table: Any = None
        self.tick_topic: Any = None
        if stage.stateful:
            names.append(self.tick_topic_name)
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
        self.topic = app.topic(*names, value_serializer="raw", key_serializer="raw")
        self._ticked: dict[str, int] = {}
        app.agent(self.topic, name=stage.name, concurrency=1)(self._run)

    async def _run(self, stream: faust.StreamT) -> None:
        log.info("%s: consuming %s", self.stage.name, ", ".join(self.stage.inputs()))
        async for event in stream.events():
            await self.handle(event.message)

    async def handle(self, msg: Any) -> None:
        """One input, inside the `process <topic>` span Faust's sensor opened for it."""
        if msg.topic == self.tick_topic_name:
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
        stored = _Stored(
            self.stage.load_state(value), int(value.get(PARTITION_FIELD, 0)), self.stage.dump_state
        )
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
    skipped, and the worker's other agents keep running."""

    def __init__(
        self, app: faust.App, sink: Sink, settings: Settings, publisher: Publisher
    ) -> None:
        super().__init__(sink, settings, publisher)
        self.sink = sink
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=sink.name)
        topic = app.topic(*sink.inputs(), value_serializer="raw", key_serializer="raw")
        app.agent(topic, name=sink.name, concurrency=1)(self._run)

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

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def record_processed(stage: str, topic: str, started: float, dead_letter: bool) -> None:
    """Count one processed input and its processing time (the stage.* metrics)."""
    meter = instruments()
    labels = {"stage": stage, "topic": topic}
    meter.duration.record(time.perf_counter() - started, labels)
    meter.events.add(1, {**labels, "outcome": "dead_letter" if dead_letter else "ok"})


class BatchStage(Stage[None], Protocol):
    """A stateless stage that works on batches (the detector)."""

    in_flight: int  # batches it infers at once (threads it splits its cores between)

    def describe(self) -> dict[str, str]:
        """Span attributes for its batches (model version, execution provider)."""
        ...

    def handle_batch(
        self,
        records: Sequence[Mapping[str, Any]],
        inbounds: Sequence[Inbound],
        raw_values: Sequence[bytes],
        now_ms: int,
    ) -> list[Outbound]: ...


class BatchRunner:
    """Runs a batch stage: inputs coalesced with `take_events` (max size, max wait), the batch
    handled in worker threads, outputs published before the batch is acknowledged."""

    def __init__(
        self,
        app: faust.App,
        stage: BatchStage,
        settings: Settings,
        publisher: Publisher,
        max_batch: int,
        max_wait_ms: float,
    ) -> None:
        self.app = app
        self.stage = stage
        self.settings = settings
        self.publisher = publisher
        self.max_batch = max_batch
        self.within_s = max(max_wait_ms, 0.1) / 1000.0  # 0 would mean "wait for a full batch"
        self.executor = ThreadPoolExecutor(stage.in_flight, thread_name_prefix=stage.name)
        self.batches = 0
        self.frames = 0
        self.described = stage.describe()  # model and provider: fixed once the stage is built
        self.provider = {"provider": str(self.described.get("cartstream.provider", "none"))}
        topic = app.topic(*stage.inputs(), value_serializer="raw", key_serializer="raw")
        # as many consumers of batches as inference threads: one batch decodes and infers
        # while another is gathered or published; in-flight work stays at `in_flight` batches
        app.agent(topic, name=stage.name, concurrency=stage.in_flight)(self._run)

    async def _run(self, stream: faust.StreamT) -> None:
        log.info(
            "%s: consuming %s in batches of up to %d",
            self.stage.name,
            ", ".join(self.stage.inputs()),
            self.max_batch,
        )
        async for events in stream.take_events(self.max_batch, within=self.within_s):
            await self.handle([e.message for e in events])

    async def handle(self, messages: Sequence[Any]) -> None:
        """One batch: a `process <topic>` span linked to every frame in it; each detection's
        `send` span continues its frame's trace and links back to the batch span."""
        started = time.perf_counter()
        now = now_ms()
        records: list[Mapping[str, Any]] = []
        inbounds: list[Inbound] = []
        raws: list[bytes] = []
        outputs: list[Outbound] = []
        for msg in messages:
            inbound = inbound_from(msg)
            decoded = decode_for_stage(
                self.stage, self.codec, inbound, msg.value, now, self.settings.topics.dead_letters
            )
            if isinstance(decoded, Outbound):
                outputs.append(decoded)
            else:
                records.append(decoded)
                inbounds.append(inbound)
                raws.append(msg.value)
        loop = asyncio.get_running_loop()
        letters = len(outputs)
        topic = messages[0].topic if messages else self.stage.name
        with message_span(
            "process",
            topic,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.batch.message_count": len(messages),
                "messaging.consumer.group.name": self.app.conf.id,
                "cartstream.stage": self.stage.name,
                "cartstream.dead_letters": letters,
                **self.described,
            },
            links=[i.traceparent for i in inbounds if i.traceparent],
        ):
            batch_trace = current_traceparent()
            inferred = time.perf_counter()
            outputs += await loop.run_in_executor(
                self.executor, self.stage.handle_batch, records, inbounds, raws, now
            )
            inferred = time.perf_counter() - inferred
        await self.publisher.publish(
            outputs, self.stage.name, links=(batch_trace,) if batch_trace else ()
        )
        self.batches += 1
        self.frames += len(messages)
        meter = instruments()
        meter.batch_size.record(len(records), self.provider)
        meter.batch_duration.record(inferred, self.provider)
        meter.duration.record(
            time.perf_counter() - started, {"stage": self.stage.name, "topic": topic}
        )
        ok = {"stage": self.stage.name, "topic": topic, "outcome": "ok"}
        meter.events.add(len(records), ok)
        if letters:
            meter.events.add(letters, {**ok, "outcome": "dead_letter"})

    @property
    def codec(self) -> AvroCodec:
        return self.publisher.codec

    def close(self) -> None:
        self.executor.shutdown(wait=True)
