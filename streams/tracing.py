"""Process spans and consumer lag for the Faust worker.

Single-event agents (reason, reconcile, anomalies, persist) get their `process <topic>` span from
faust-streaming's own `OpenTelemetrySensor`: it reads `traceparent` from the record's headers,
opens the span before the agent sees the event and ends it when the agent asks for the next one,
so every span the stage opens (the `send` of its outputs, the Postgres write) nests under it. It
only reads headers; `Publisher` writes the one `traceparent` per output.

The sensor names spans `<topic> process` (an older draft of the messaging conventions); this
subclass renames them `process <topic>` and leaves out the streams consumed in batches
(`take_events`), where the sensor's span per event cannot be current while the batch runs:
- the detect stream: `BatchRunner` opens one span per batch linking every frame;
- the stateful stages' inputs: `StageRunner` opens each record's `process <topic>` span itself
  (`record_span`), with the sensor's attributes, while it handles that record;
- the deadline tick topics: a tick carries no trace and would only add root spans.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import faust
from faust.contrib.opentelemetry import OpenTelemetrySensor
from faust.types import TP, EventT, StreamT
from opentelemetry.trace import Span, SpanKind, get_current_span

from cartstream.core.telemetry import message_span
from cartstream.streams.stage import Inbound


class ProcessSpanSensor(OpenTelemetrySensor):  # type: ignore[misc]
    def __init__(self, skip_topics: Iterable[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.skip_topics = frozenset(skip_topics)

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT, event: EventT
    ) -> dict[str, Any] | None:
        if tp.topic in self.skip_topics:
            return None
        state: dict[str, Any] | None = super().on_stream_event_in(tp, offset, stream, event)
        if state and state.get("span") is not None:
            state["span"].update_name(f"process {tp.topic}")
        return state


def install_process_spans(app: faust.App, skip_topics: Iterable[str]) -> ProcessSpanSensor:
    sensor = ProcessSpanSensor(skip_topics)
    app.sensors.add(sensor)
    return sensor


@contextmanager
def record_span(
    inbound: Inbound, group: str, stage: str, start_time: int | None = None
) -> Iterator[Span]:
    """A `process <topic>` span for one record of a batch, current while it is handled: the
    child of the record's `traceparent`, with the attributes the sensor would give it.
    `start_time` (ns since the epoch): when its handling began, for a span opened after it."""
    attributes: dict[str, Any] = {
        "messaging.destination.partition.id": str(inbound.partition),
        "messaging.kafka.message.offset": inbound.offset,
        "messaging.consumer.group.name": group,
        "cartstream.stage": stage,
    }
    if inbound.key is not None:
        attributes["messaging.kafka.message.key"] = bytes(inbound.key).decode("utf-8", "replace")
    with message_span(
        "process",
        inbound.topic,
        parent=inbound.traceparent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        start_time=start_time,
    ) as span:
        yield span


def process_span() -> Span:
    """The current event's process span (a non-recording one when tracing is off)."""
    return get_current_span()


def consumer_lag(app: faust.App) -> list[tuple[str, int, str, int]]:
    """(topic, partition, group, lag) for every partition this worker is assigned."""
    consumer = app.consumer
    rows = []
    for tp in sorted(consumer.assignment()):
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        read = consumer._read_offset.get(tp)  # Faust keeps no public position
        position = read + 1 if read is not None else (consumer._committed_offset.get(tp) or 0)
        rows.append((tp.topic, tp.partition, app.conf.id, max(0, int(highwater) - position)))
    return rows
