"""OpenTelemetry wiring: tracer provider from settings, W3C trace context in Kafka headers.

With `otel_exporter=none` spans still get real ids but are exported nowhere, so the `traceparent`
header flows from the cart's produce through every stage either way, and turning export on needs
no change anywhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from threading import Lock
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cartstream.services.settings import Settings

log = logging.getLogger(__name__)
TRACEPARENT = "traceparent"
_propagator = TraceContextTextMapPropagator()
_configured = False


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a local file, one JSON object a line (the offline default)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [span.to_json(indent=None) for span in spans]
        with self._lock, self.path.open("a") as fh:
            fh.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def setup_tracing(settings: Settings) -> None:
    """Install the tracer provider the settings ask for (once per process)."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    trace.set_tracer_provider(provider)
    _configured = True
    # Spans get real ids (so `traceparent` flows) even when nothing exports them.
    if settings.otel_exporter == "none":
        return
    exporter: SpanExporter
    if settings.otel_exporter == "console":
        exporter = ConsoleSpanExporter()
    elif settings.otel_exporter == "jsonl":
        exporter = JsonLinesSpanExporter(settings.otel_jsonl_path)
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # pragma: no cover - optional package
            raise RuntimeError("otel_exporter=otlp needs opentelemetry-exporter-otlp") from exc
        exporter = OTLPSpanExporter(endpoint=settings.otel_endpoint)
    provider.add_span_processor(BatchSpanProcessor(exporter))


def tracer() -> trace.Tracer:
    return trace.get_tracer("cartstream")


def context_from(traceparent: bytes | None) -> otel_context.Context | None:
    if not traceparent:
        return None
    return _propagator.extract({TRACEPARENT: traceparent.decode(errors="replace")})


def current_traceparent() -> bytes | None:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    value = carrier.get(TRACEPARENT)
    return value.encode() if value else None


@contextmanager
def message_span(
    operation: str,
    topic: str,
    parent: bytes | None = None,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span named `<operation> <topic>` with OTel messaging attributes, child of `parent`."""
    attrs = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.name": operation,
        **(attributes or {}),
    }
    with tracer().start_as_current_span(
        f"{operation} {topic}", context=context_from(parent), kind=kind, attributes=attrs
    ) as span:
        yield span
