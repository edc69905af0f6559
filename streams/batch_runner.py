"""Runs a batch stage (the detector) as a Faust agent: inputs coalesced with `take_events`
(max size, max wait), each batch handled in a worker thread, its outputs published before the
batch is acknowledged.

A batch that fails (the model raised, a publish failed) is read again after a pause
(`InOrder.again`), never acknowledged: Faust would restart the agent and `take_events` would
acknowledge the batch in its `finally`, so its frames would never get their detections and the
steps that wait for them would be decided without them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import faust
from opentelemetry.trace import SpanKind

from cartstream.core.ids import now_ms
from cartstream.core.metrics import instruments
from cartstream.core.settings import Settings
from cartstream.core.telemetry import (
    current_traceparent,
    message_span,
)
from cartstream.schemas.codec import AvroCodec
from cartstream.streams.ingress import Ingress
from cartstream.streams.input_runner import in_order, read_again_on_error
from cartstream.streams.publish import Publisher, inbound_from
from cartstream.streams.stage import Inbound, Outbound, Stage

log = logging.getLogger(__name__)


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
        self.in_order = in_order(
            app, stage.name, stage.inputs().keys(), sequential=stage.in_flight == 1
        )
        self.ingress = Ingress(settings, publisher.codec, stage)
        self.batches = 0
        self.frames = 0
        self.described = stage.describe()  # model and provider: fixed once the stage is built
        self.provider = {"provider": str(self.described.get("cartstream.provider", "none"))}
        topic = app.topic(*stage.inputs(), value_serializer="raw", key_serializer="raw")
        # as many consumers of batches as inference threads: one batch decodes and infers
        # while another is gathered or published; in-flight work stays at `in_flight` batches
        agent = app.agent(topic, name=stage.name, concurrency=stage.in_flight)(self._run)
        self.in_order.agent = agent

    async def _run(self, stream: faust.StreamT) -> None:
        log.info(
            "%s: consuming %s in batches of up to %d",
            self.stage.name,
            ", ".join(self.stage.inputs()),
            self.max_batch,
        )
        async for events in stream.take_events(self.max_batch, within=self.within_s):
            admitted = [e.message for e in events if await self.in_order.admit(e.message)]
            if admitted:
                await self.guarded(admitted)

    async def guarded(self, messages: Sequence[Any]) -> None:
        """`handle`, and on any error the batch read again after a pause: never raises."""
        what = f"{self.stage.name}: a batch of frames failed"
        await read_again_on_error(self.handle(messages), self.in_order, messages, what)

    async def handle(self, messages: Sequence[Any]) -> None:
        """One batch: a `process <topic>` span linked to every frame in it; each detection's
        `send` span continues its frame's trace and links back to the batch span."""
        started = time.perf_counter()
        now = now_ms()
        records: list[Mapping[str, Any]] = []
        inbounds: list[Inbound] = []
        raws: list[bytes] = []
        outputs: list[Outbound] = []
        letters = 0
        for msg in messages:
            inbound = inbound_from(msg)
            admitted = self.ingress.admit(inbound, msg.value, now)
            outputs += admitted.outputs
            if admitted.record is None:
                letters += 1
            else:
                records.append(admitted.record)
                inbounds.append(inbound)
                raws.append(msg.value)
        loop = asyncio.get_running_loop()
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
