"""OpenTelemetry tracing: the tracer provider from settings, W3C trace context in Kafka headers.

Where spans go (`otel_exporter`):
- `auto` (default): OTLP when `otel_endpoint` is set, else the local JSON-lines file
  (`otel_jsonl_path`), which `cartstream trace` reads;
- `otlp`: OTLP over gRPC or HTTP (`otel_protocol`) to a collector;
- `jsonl`, `console`, or `none` (spans still get ids, so `traceparent` keeps flowing).

Sampling is decided once, at the cart (`otel_sample_ratio`): every later span follows its
parent, so a trace is either whole or absent. With ratio 0 nothing is recorded anywhere and the
headers carry unsampled contexts.

Header discipline: exactly one `traceparent` per Kafka record, written by whoever sends it (the
cart client, `streams.publish.Publisher`) from its own `send <topic>` span. Faust's OTel sensor
only reads headers, never writes them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cartstream.core.ids import TRACEPARENT
from cartstream.core.settings import Settings
from cartstream.core.spanfile import JsonLinesSpanExporter

log = logging.getLogger(__name__)

MAX_LINKS = 1024  # a checkout links every basket change of its session
_propagator = TraceContextTextMapPropagator()

# record fields worth seeing on a span (the message's identity and what it says)
RECORD_ATTRIBUTES = (
    "event_id",
    "checkout_id",
    "anomaly_id",
    "cart_id",
    "session_id",
    "camera_id",
    "sequence",
    "seq",
    "action",
    "sku",
    "quantity",
    "kind",
    "status",
)


class _Switchable(SpanProcessor):
    """The provider's one processor; `setup_tracing` swaps what it delegates to, so a process
    (a test run, the demo) can point its spans elsewhere after the global provider is set."""

    def __init__(self) -> None:
        self.delegate: SpanProcessor | None = None

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        if self.delegate is not None:
            self.delegate.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.delegate is not None:
            self.delegate.on_end(span)

    def shutdown(self) -> None:
        if self.delegate is not None:
            self.delegate.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.delegate.force_flush(timeout_millis) if self.delegate is not None else True


_provider: TracerProvider | None = None
_switch = _Switchable()
_current: tuple[Any, ...] | None = None


def exporter_kind(settings: Settings) -> str:
    if settings.otel_exporter == "auto":
        return "otlp" if settings.otel_endpoint else "jsonl"
    return settings.otel_exporter


def _span_exporter(settings: Settings) -> SpanExporter | None:
    kind = exporter_kind(settings)
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "jsonl":
        return JsonLinesSpanExporter(
            settings.otel_jsonl_path, max_bytes=settings.otel_jsonl_max_mb * 1_000_000
        )
    endpoint = str(settings.otel_endpoint)
    if settings.otel_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")


def setup_tracing(settings: Settings, component: str = "worker") -> None:
    """Install the global tracer provider (once) and point it where the settings say."""
    global _provider, _current
    if _provider is None:
        ratio = settings.otel_sample_ratio
        _provider = TracerProvider(
            resource=Resource.create({"service.name": f"{settings.service_name}-{component}"}),
            sampler=ParentBased(TraceIdRatioBased(ratio)),
            span_limits=SpanLimits(max_links=MAX_LINKS),
        )
        _provider.add_span_processor(_switch)
        trace.set_tracer_provider(_provider)
    wanted = (
        exporter_kind(settings),
        settings.otel_endpoint,
        settings.otel_protocol,
        str(settings.otel_jsonl_path),
    )
    if wanted == _current:
        return
    old, _current = _switch.delegate, wanted
    exporter = _span_exporter(settings)
    _switch.delegate = (
        BatchSpanProcessor(exporter, schedule_delay_millis=1000) if exporter else None
    )
    if old is not None:
        old.shutdown()
    log.info("tracing: spans to %s", wanted[0] if wanted[0] != "jsonl" else wanted[3])


def flush_tracing(timeout_s: float = 10.0) -> bool:
    """Export what is buffered (before a process exits or a test reads the spans)."""
    return _switch.force_flush(int(timeout_s * 1000))


_tracer = trace.get_tracer("cartstream")  # a proxy until the provider is set, then delegates


def tracer() -> trace.Tracer:
    """The package's tracer (looked up once: `get_tracer` costs as much as a span)."""
    return _tracer


def context_from(traceparent: bytes | str | None) -> otel_context.Context | None:
    if not traceparent:
        return None
    text = traceparent.decode(errors="replace") if isinstance(traceparent, bytes) else traceparent
    return _propagator.extract({TRACEPARENT: text})


def link_to(traceparent: bytes | str | None) -> Link | None:
    """A span link to the span a `traceparent` names (None when it names none)."""
    ctx = context_from(traceparent)
    if ctx is None:
        return None
    span_context = trace.get_current_span(ctx).get_span_context()
    if not span_context.is_valid:
        return None
    return Link(span_context)


def current_traceparent() -> bytes | None:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    value = carrier.get(TRACEPARENT)
    return value.encode() if value else None


def record_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    """`cartstream.<field>` attributes for the identifying fields a record has."""
    out: dict[str, Any] = {}
    for name in RECORD_ATTRIBUTES:
        value = record.get(name)
        if isinstance(value, str | int | float | bool):
            out[f"cartstream.{name}"] = value
    return out


def mark_error(span: Span, reason: str, error_type: str | None = None) -> None:
    """Flag a span as failed (a dead letter, a crash), with the reason on it."""
    span.set_status(Status(StatusCode.ERROR, reason))
    if error_type:
        span.set_attribute("error.type", error_type)


@contextmanager
def message_span(
    operation: str,
    topic: str,
    parent: bytes | None = None,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Mapping[str, Any] | None = None,
    links: Iterable[bytes | str] = (),
    start_time: int | None = None,
) -> Iterator[Span]:
    """A span named `<operation> <topic>` with OTel messaging attributes.

    `parent`: the traceparent to continue (None: the current span); `links`: traceparents of
    other spans this one depends on (the frames of an inference batch, a checkout's changes);
    `start_time`: when it began (ns since the epoch; None: now), for a span opened after the
    work it covers.
    """
    attrs = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.name": operation,
        "messaging.operation.type": operation if operation in ("send", "process") else "process",
        **(attributes or {}),
    }
    span_links = [link for link in (link_to(t) for t in links) if link is not None]
    with tracer().start_as_current_span(
        f"{operation} {topic}",
        context=context_from(parent),
        kind=kind,
        attributes=attrs,
        links=span_links,
        start_time=start_time,
    ) as span:
        yield span
