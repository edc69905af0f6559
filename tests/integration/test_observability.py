"""Traces and metrics through the real broker, a real OTLP collector and Postgres.

The worker exports spans and metrics over OTLP/gRPC to a rotel collector on loopback, the cart
(this process) exports its spans over OTLP/HTTP to the same collector, and the collector forwards
everything to an OTLP/HTTP sink in the test. From each persisted checkout's trace the test walks
the links back to the cart's produce span of every frame and weight packet its changes used.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from cartstream.core.settings import Settings
from cartstream.core.spanfile import SpanRecord
from cartstream.core.telemetry import flush_tracing, setup_tracing
from cartstream.models.catalog import Catalog
from cartstream.services.cli.main import cli
from cartstream.services.kafka.tail import read_topic
from cartstream.services.kafka.topics import ensure_topics
from cartstream.services.observability.tracetree import SpanIndex
from cartstream.services.tools.harness import WorkerProcess, worker_env
from tests.integration.test_worker import run_sessions, wait_for
from tests.otlp import Collector, OtlpSink


# Long on purpose: one run through a real collector, then every link of every checkout's trace.
def test_a_checkout_trace_reaches_every_frame_and_packet_through_a_collector(
    broker_settings: Callable[..., Settings], pg_url: str, tmp_path: Path, catalog: Catalog
) -> None:
    with OtlpSink() as sink, Collector(sink.endpoint, tmp_path) as collector:
        settings = broker_settings(database_url=pg_url)
        ensure_topics(settings)
        ready = tmp_path / "ready"
        env = worker_env(settings, settings.app_id, pg_url, ready)
        env.update(
            {
                "CARTSTREAM_OTEL_ENDPOINT": collector.grpc_endpoint,
                "CARTSTREAM_OTEL_PROTOCOL": "grpc",
                "CARTSTREAM_OTEL_METRICS_INTERVAL_S": "1",
                # a drift reading after a few frames per camera (the bundled reference)
                "CARTSTREAM_DETECT__DRIFT_WINDOW": "10",
                "CARTSTREAM_DETECT__DRIFT_MIN_SAMPLES": "10",
            }
        )
        worker = WorkerProcess(env, tmp_path / "worker.log", web=True)
        cart = settings.with_overrides(otel_endpoint=collector.http_endpoint, otel_protocol="http")
        setup_tracing(cart, component="cart")
        try:
            worker.wait_ready(ready, timeout_s=60)
            _, requested, repo = run_sessions(cart, tmp_path, catalog, seed=31)
            flush_tracing()

            def written() -> bool:
                done = [s for s in sink.spans() if s.name == "INSERT checkouts"]
                return len(done) >= len(requested)

            wait_for(written, 30, "the checkouts' spans through the collector")
            prometheus = (
                urllib.request.urlopen(
                    f"http://127.0.0.1:{env['CARTSTREAM_WEB_PORT']}/metrics", timeout=10
                )
                .read()
                .decode()
            )
            wait_for(lambda: "cartstream.checkouts" in sink.metric_names, 30, "OTLP metrics")
        finally:
            worker.stop()
            setup_tracing(settings.with_overrides(otel_exporter="none"))
    index = SpanIndex.build(sink.spans())
    changes = [r for r, _ in read_topic(settings, settings.topics.basket_changes, idle_timeout_s=2)]
    rows = repo.checkouts(requested)
    assert rows
    for row in rows:
        _assert_reaches_the_cart(index, row.checkout_id, row.session_id, changes)

    # metrics: OTLP through the collector, and the Prometheus scrape on the worker's web port
    for name in (
        "cartstream.stage.events",
        "cartstream.stage.duration",
        "cartstream.detect.batch.size",
        "cartstream.detect.batch.duration",
        "cartstream.checkout.latency",
        "cartstream.consumer.lag",
        "cartstream.drift.psi",
    ):
        assert name in sink.metric_names, sorted(sink.metric_names)
    scraped = _prometheus_samples(prometheus)
    assert scraped[("cartstream_stage_events_total", "reason", "ok")] > 0
    assert scraped[("cartstream_checkouts_total", "", "")] == len(rows)
    for family in (
        "cartstream_checkout_latency_seconds_bucket",
        "cartstream_consumer_lag",
        "cartstream_drift_psi",
        "cartstream_detect_batch_size_bucket",
        "cartstream_stage_duration_seconds_bucket",
    ):
        assert any(name == family for name, _, _ in scraped), family


def _prometheus_samples(text: str) -> dict[tuple[str, str, str], float]:
    """(metric, stage label, outcome label) -> summed value, from the exposition format."""
    out: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("cartstream_"):
            continue
        name, _, rest = line.partition("{")
        labels = dict(
            part.split("=", 1) for part in rest.rsplit("}", 1)[0].split(",") if "=" in part
        )
        key = (name, labels.get("stage", "").strip('"'), labels.get("outcome", "").strip('"'))
        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _assert_reaches_the_cart(
    index: SpanIndex, checkout_id: str, session_id: str, changes: list[dict[str, Any]]
) -> None:
    send = index.checkout_span(checkout_id)
    assert send is not None and send.name == "send checkouts"
    trace = index.traces[send.trace_id]
    root = index.root_of(send)
    assert (root.name, root.kind, root.stage) == ("send cart.sessions", "PRODUCER", "cart")
    # the row write is a child of the checkout's processing, in the same trace
    (write,) = [s for s in trace if s.name == "INSERT checkouts"]
    parent = next(s for s in trace if s.span_id == write.parent_id)
    assert parent.name == "process checkouts"
    assert parent.attributes["messaging.system"] == "kafka"
    assert parent.attributes["messaging.consumer.group.name"]
    assert "messaging.kafka.message.offset" in parent.attributes
    # every basket change of the session is linked, and each reaches its frames and packets
    mine = [
        c
        for c in changes
        if c["session_id"] == session_id and c["action"] in ("ADD", "REMOVE", "UNKNOWN")
    ]
    linked = [index.get(t, s) for t, s in send.links]
    linked_changes = {
        str(s.attributes.get("cartstream.event_id")): s
        for s in linked
        if s is not None and s.name == "send basket.changes"
    }
    assert {c["event_id"] for c in mine} <= set(linked_changes)
    for change in mine:
        span = linked_changes[change["event_id"]]
        packet = index.root_of(span)
        assert packet.name == "send cart.weights" and packet.stage == "cart"
        assert packet.attributes["messaging.message.id"] == change["source_event_id"]
        reached = {_cart_origin(index, t, s) for t, s in span.links}
        assert set(change["frame_event_ids"]) <= reached, "a frame the change used is unreachable"


def _cart_origin(index: SpanIndex, trace_id: str, span_id: str) -> str | None:
    span: SpanRecord | None = index.get(trace_id, span_id)
    if span is None:
        return None
    root = index.root_of(span)
    assert root.kind == "PRODUCER" and root.stage == "cart", root.name
    return str(root.attributes["messaging.message.id"])


def test_trace_cli_renders_a_checkout_from_the_span_file(
    broker_settings: Callable[..., Settings], pg_url: str, tmp_path: Path, catalog: Catalog
) -> None:
    spans = tmp_path / "spans.jsonl"
    settings = broker_settings(database_url=pg_url, otel_jsonl_path=spans, otel_exporter="jsonl")
    ensure_topics(settings)
    ready = tmp_path / "ready"
    env = worker_env(settings, settings.app_id, pg_url, ready)
    env["CARTSTREAM_OTEL_EXPORTER"] = "jsonl"
    worker = WorkerProcess(env, tmp_path / "worker.log")
    setup_tracing(settings, component="cart")
    try:
        worker.wait_ready(ready, timeout_s=60)
        _, requested, repo = run_sessions(settings, tmp_path, catalog, seed=32)
        flush_tracing()
        wait_for(
            lambda: (
                spans.exists() and spans.read_text().count('"INSERT checkouts"') >= len(requested)
            ),
            30,
            "the checkouts' spans in the span file",
        )
    finally:
        worker.stop()
        setup_tracing(settings.with_overrides(otel_exporter="none"))
    row = repo.checkouts(requested)[0]
    runner = CliRunner()
    result = runner.invoke(cli, ["trace", row.checkout_id, "--spans", str(spans)], obj={})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    text = result.output
    for expected in (
        f"checkout {row.checkout_id}",
        "send cart.sessions",
        "process cart.sessions",
        "send checkouts",
        "INSERT checkouts",
        "send basket.changes ADD",
        "send cart.weights #",
        "frame cam ",
        "errors: none",
    ):
        assert expected in text, expected
    by_cart = runner.invoke(cli, ["trace", "--cart", row.cart_id, "--spans", str(spans)], obj={})
    assert by_cart.exit_code == 0 and "INSERT checkouts" in by_cart.output
    missing = runner.invoke(cli, ["trace", "no-such-checkout", "--spans", str(spans)], obj={})
    assert missing.exit_code != 0
