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
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import faust
from opentelemetry.trace import SpanKind

from cartstream.schemas.codec import AvroCodec
from cartstream.services.settings import Settings
from cartstream.services.telemetry import current_traceparent, message_span
from cartstream.services.topics import tick_topic_name
from cartstream.streams.deadletter import decode_for_stage
from cartstream.streams.stage import EVENT_ID_HEADER, TRACEPARENT, Inbound, Outbound, Stage

log = logging.getLogger(__name__)

PARTITION_FIELD = "_partition"
TICK_RESEND_MS = 5_000


def now_ms() -> int:
    return int(time.time() * 1000)


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
    """Encodes Outbounds and sends them, waiting for the broker's acks."""

    def __init__(self, app: faust.App, codec: AvroCodec) -> None:
        self.app = app
        self.codec = codec
        self._topics: dict[str, faust.TopicT] = {}

    def topic(self, name: str) -> faust.TopicT:
        if name not in self._topics:
            self._topics[name] = self.app.topic(name, value_serializer="raw", key_serializer="raw")
        return self._topics[name]

    async def publish(self, outputs: Iterable[Outbound]) -> None:
        futures = []
        for out in outputs:
            headers = self.codec.headers(out.schema)
            trace = out.traceparent or current_traceparent()
            if trace:
                headers.append((TRACEPARENT, trace))
            event_id = (
                out.record.get("event_id")
                or out.record.get("checkout_id")
                or out.record.get("anomaly_id")
            )
            if event_id:
                headers.append((EVENT_ID_HEADER, str(event_id).encode()))
            with message_span(
                "send",
                out.topic,
                kind=SpanKind.PRODUCER,
                attributes={"messaging.kafka.message.key": out.key},
            ):
                fut = await self.topic(out.topic).send(
                    key=out.key.encode(),
                    value=self.codec.encode(out.schema, out.record),
                    headers=headers,
                )
            futures.append(fut)
        if futures:
            await asyncio.gather(*futures)


class StageRunner:
    def __init__(
        self, app: faust.App, stage: Stage, settings: Settings, publisher: Publisher
    ) -> None:
        self.app = app
        self.stage = stage
        self.settings = settings
        self.publisher = publisher
        self.codec = publisher.codec
        partitions = settings.topics.stream_partitions
        prefix = f"{settings.app_id}.{stage.name}"
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
                f"{prefix}.state-changelog",
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
        inbound = inbound_from(msg)
        now = now_ms()
        with message_span(
            "process",
            msg.topic,
            parent=inbound.traceparent,
            attributes={
                "messaging.destination.partition.id": str(msg.partition),
                "messaging.kafka.offset": msg.offset,
                "messaging.consumer.group.name": self.app.conf.id,
                "messaging.kafka.message.key": (msg.key or b"").decode(errors="replace"),
            },
        ):
            if msg.topic == self.tick_topic_name:
                await self._on_tick((msg.key or b"").decode(), now)
                return
            decoded = decode_for_stage(
                self.stage, self.codec, inbound, msg.value, now, self.settings.topics.dead_letters
            )
            if isinstance(decoded, Outbound):
                await self.publisher.publish([decoded])
                return
            key = self.stage.state_key(decoded)
            state = self.table.get(key) if self.table is not None else None
            result = self.stage.handle(state, decoded, inbound, now)
            await self.publisher.publish(result.outputs)
            self._store(key, result.state, msg.partition)

    async def _on_tick(self, key: str, now: int) -> None:
        self._ticked.pop(key, None)
        state = self.table.get(key)
        if state is None or not self.stage.needs_tick(state, now):
            return
        result = self.stage.tick(state, now)
        await self.publisher.publish(result.outputs)
        self._store(key, result.state, state.get(PARTITION_FIELD, 0))

    def _store(self, key: str, state: dict[str, Any] | None, partition: int) -> None:
        if self.table is None:
            return
        if state is None:
            if key in self.table:
                del self.table[key]
            return
        state[PARTITION_FIELD] = partition
        self.table[key] = state

    async def _send_ticks(self) -> None:
        now = now_ms()
        for key, state in list(self.table.items()):
            if not state or not self.stage.needs_tick(state, now):
                continue
            if now - self._ticked.get(key, 0) < TICK_RESEND_MS:
                continue
            self._ticked[key] = now
            await self.tick_topic.send(
                key=str(key).encode(), value=b"tick", partition=state.get(PARTITION_FIELD, 0)
            )


class BatchStage(Stage, Protocol):
    """A stateless stage that works on batches (the detector)."""

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
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix=stage.name)
        self.batches = 0
        self.frames = 0
        topic = app.topic(*stage.inputs(), value_serializer="raw", key_serializer="raw")
        # two consumers of batches and two inference threads: one batch decodes and infers
        # while the other is gathered or published; in-flight work stays at two batches
        app.agent(topic, name=stage.name, concurrency=2)(self._run)

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
        with message_span(
            "process",
            self.stage.name,
            attributes={
                "messaging.batch.message_count": len(messages),
                "messaging.consumer.group.name": self.app.conf.id,
            },
        ):
            outputs += await loop.run_in_executor(
                self.executor, self.stage.handle_batch, records, inbounds, raws, now
            )
        await self.publisher.publish(outputs)
        self.batches += 1
        self.frames += len(messages)

    @property
    def codec(self) -> AvroCodec:
        return self.publisher.codec
