"""Between a runner and the broker: where an input came from (`inbound_from`), sending outputs
with their trace context (`Publisher`), and counting what was processed (`record_processed`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import faust
from opentelemetry.trace import SpanKind

from cartstream.core.ids import EVENT_ID_HEADER, TRACEPARENT
from cartstream.core.metrics import instruments, reason_label
from cartstream.core.telemetry import (
    current_traceparent,
    mark_error,
    message_span,
    record_attributes,
)
from cartstream.schemas.codec import AvroCodec
from cartstream.streams.stage import Inbound, Outbound

log = logging.getLogger(__name__)


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

    Outputs go straight to the app's producer (Faust's `Producer.send`: aiokafka's send with
    Faust's error mapping), not through `faust.Topic.send`: their key and value are bytes
    already, and a topic's send wraps each record in a pending message and runs it through the
    (raw) serializers and Faust's send sensors, none of which cartstream uses (what that saved
    on a storm of dead letters: docs/reliability.md, "Outputs straight to the producer").
    """

    def __init__(self, app: faust.App, codec: AvroCodec, dead_letters: str = "") -> None:
        self.app = app
        self.codec = codec
        self.dead_letters = dead_letters

    async def publish(
        self, outputs: Iterable[Outbound], stage: str, links: tuple[bytes, ...] = ()
    ) -> None:
        futures = []
        producer = None
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
            producer = producer or await self.app.maybe_start_producer()  # started: at once
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
                fut = await producer.send(
                    out.topic,
                    out.key.encode(),
                    self.codec.encode(out.schema, out.record),
                    partition=out.partition,
                    timestamp=None,
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


def record_processed(stage: str, topic: str, started: float, dead_letter: bool) -> None:
    """Count one processed input and its processing time (the stage.* metrics)."""
    meter = instruments()
    labels = {"stage": stage, "topic": topic}
    meter.duration.record(time.perf_counter() - started, labels)
    meter.events.add(1, {**labels, "outcome": "dead_letter" if dead_letter else "ok"})
