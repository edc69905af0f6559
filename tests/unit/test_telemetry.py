"""Spans in memory and in the span file, the trace tree, metric labels (no I/O but tmp files)."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from cartstream.core.metrics import reason_label
from cartstream.core.settings import Settings
from cartstream.core.spanfile import (
    JsonLinesSpanExporter,
    SpanRecord,
    read_spans,
    span_files,
)
from cartstream.core.telemetry import exporter_kind, link_to, record_attributes
from cartstream.services.observability.tracetree import SpanIndex, render_checkout


def finished_spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def test_a_span_round_trips_through_the_span_file_with_its_links(tmp_path: Path) -> None:
    provider, memory = finished_spans()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("send cart.frames", kind=SpanKind.PRODUCER) as frame:
        pass
    ctx = frame.get_span_context()
    traceparent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"
    link = link_to(traceparent)
    assert link is not None
    with tracer.start_as_current_span("process cart.frames", links=[link]) as batch:
        batch.set_status(Status(StatusCode.ERROR, "undecodable JPEG"))
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesSpanExporter(path)
    exporter.export(memory.get_finished_spans())
    with path.open("a") as fh:
        fh.write('{"trace_id": "torn')  # a writer killed mid-line
    spans = list(read_spans([path]))
    assert [s.name for s in spans] == ["send cart.frames", "process cart.frames"]
    assert spans[1].links == [(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")]
    assert spans[1].failed and spans[1].status_message == "undecodable JPEG"
    assert spans[0].kind == "PRODUCER" and spans[0].parent_id is None
    assert link_to(None) is None and link_to("garbage") is None


def test_the_span_file_rotates_once_past_its_size(tmp_path: Path) -> None:
    provider, memory = finished_spans()
    with provider.get_tracer("t").start_as_current_span("x"):
        pass
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesSpanExporter(path, max_bytes=10)
    for _ in range(3):
        exporter.export(memory.get_finished_spans())
    assert span_files(path) == [path.with_name("spans.jsonl.1"), path]
    assert len(path.read_text().splitlines()) == 1  # written after the last rotation
    assert json.loads(path.read_text())["name"] == "x"


def test_settings_choose_the_exporter() -> None:
    assert exporter_kind(Settings()) == "jsonl"  # no collector: the local span file
    assert exporter_kind(Settings(otel_endpoint="http://c:4317")) == "otlp"
    assert exporter_kind(Settings(otel_exporter="none", otel_endpoint="http://c:4317")) == "none"


def test_record_attributes_keep_identifying_scalars_only() -> None:
    attrs = record_attributes({"event_id": "e1", "sku": None, "samples_g": [1.0], "seq": 3})
    assert attrs == {"cartstream.event_id": "e1", "cartstream.seq": 3}


def test_dead_letter_reasons_group_without_their_numbers() -> None:
    assert reason_label("oversized frame: 3000000 bytes (limit 2000000)") == "oversized frame"
    assert reason_label("sample_rate_hz 0 outside 1..2000") == "sample_rate_hz N outside N..N"
    assert reason_label("unknown writer schema fingerprint 0a1b2c3d4e5f6071") == (
        "unknown writer schema fingerprint N"
    )


def _span(
    span_id: str,
    name: str,
    trace: str = "t1",
    parent: str | None = None,
    start_ms: int = 0,
    links: list[tuple[str, str]] | None = None,
    **attributes: object,
) -> SpanRecord:
    return SpanRecord(
        trace_id=trace,
        span_id=span_id,
        parent_id=parent,
        name=name,
        kind="PRODUCER" if name.startswith("send") else "CONSUMER",
        start_ns=start_ms * 1_000_000,
        end_ns=(start_ms + 2) * 1_000_000,
        status="ERROR" if attributes.pop("failed", False) else "UNSET",
        status_message="database unavailable" if name.startswith("INSERT") else None,
        service="cartstream-worker",
        attributes={f"cartstream.{k}": v for k, v in attributes.items()},
        links=links or [],
    )


def test_the_tree_follows_links_to_frames_and_packets_in_80_columns() -> None:
    spans = [
        # the checkout's own trace
        _span("a", "send cart.sessions", stage="cart"),
        _span("b", "process cart.sessions", parent="a", start_ms=5, stage="reason"),
        _span(
            "c",
            "send checkouts",
            parent="b",
            start_ms=9,
            links=[("t2", "g"), ("t9", "zz")],
            checkout_id="co-1",
            cart_id="cart-7",
            status="APPROVED",
            stage="reconcile",
        ),
        _span("d", "INSERT checkouts", parent="c", start_ms=12, stage="persist", failed=True),
        # a basket change, in the trace of the packet that completed its step
        _span("f", "send cart.weights", trace="t2", start_ms=-900, sequence=41, stage="cart"),
        _span(
            "g",
            "send basket.changes",
            trace="t2",
            parent="f",
            start_ms=-880,
            links=[("t3", "h"), ("t4", "j"), ("t5", "k")],
            action="ADD",
            sku="BAK-WHOLEMEAL-800-A-VERY-LONG-NAME-THAT-MUST-BE-CUT",
            quantity=2,
            stage="reason",
        ),
        _span("h", "send cart.weights", trace="t3", start_ms=-1100, sequence=40, stage="cart"),
        _span("i", "send cart.frames", trace="t4", start_ms=-1000, camera_id=1, sequence=7),
        _span("j", "send cart.detections", trace="t4", parent="i", start_ms=-990, stage="detect"),
    ]
    index = SpanIndex.build(spans)
    assert index.checkouts_of_cart("cart-7") == ["co-1"]
    text = render_checkout(index, "co-1")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "checkout co-1  cart cart-7  APPROVED" in lines[0]
    assert any("INSERT checkouts" in line for line in lines)
    assert any("✗ database unavailable" in line for line in lines)
    assert any("send cart.weights #41" in line for line in lines)
    assert any("send cart.weights #40 (1 more packets)" in line for line in lines)
    assert any("frame cam 1 #7" in line for line in lines)
    assert sum("not in the span file" in line for line in lines) == 2  # t5/k and t9/zz
    assert lines[-1] == "errors: 1"
