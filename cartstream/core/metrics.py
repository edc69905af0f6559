"""OpenTelemetry metrics: what on-call watches, exported over OTLP and scraped by Prometheus.

| instrument | kind | attributes |
|---|---|---|
| `cartstream.stage.events` | counter | stage, topic, outcome (ok, dead_letter) |
| `cartstream.stage.duration` (s) | histogram | stage, topic |
| `cartstream.detect.batch.size` | histogram | provider |
| `cartstream.detect.batch.duration` (s) | histogram | provider |
| `cartstream.checkout.latency` (s) | histogram | status (cart's request to row written) |
| `cartstream.checkouts` | counter | status (rows written, not re-deliveries) |
| `cartstream.anomalies` | counter | kind, severity (rows written) |
| `cartstream.dead_letters` | counter | stage, error_type, reason |
| `cartstream.auth.failures` | counter | stage, topic, mode (enforce, report), reason |
| `cartstream.consumer.lag` | gauge | topic, partition, group |
| `cartstream.drift.psi` | gauge | scope (store, sku), feature, store, camera or sku |
| `cartstream.drift.vision_surprise` | gauge | sku (-log10 P of vision's unconfirmed count) |

Instruments come from the global meter; until `setup_metrics` installs a provider they record
nothing, so stages and tests use them unconditionally. Prometheus names follow the exporter's
rules (`cartstream_stage_duration_seconds_bucket`, ...).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from cartstream.core.settings import Settings

log = logging.getLogger(__name__)

SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_NUMBERS = re.compile(r"\b[0-9a-f]{8,}\b|-?\d+(\.\d+)?")

LagSource = Callable[[], Iterable[tuple[str, int, str, int]]]  # topic, partition, group, lag
_lag_sources: list[LagSource] = []
DriftSource = Callable[[], Iterable[tuple[dict[str, str], float]]]  # attributes, value
_drift_sources: dict[str, list[DriftSource]] = {"psi": [], "vision_surprise": []}
_installed = False
_prometheus = False


def reason_label(reason: str) -> str:
    """A dead letter's reason with its numbers and ids taken out, so it groups (bounded)."""
    return _NUMBERS.sub("N", reason.split(":", 1)[0]).strip()[:60]


@dataclass(frozen=True)
class Instruments:
    events: metrics.Counter
    duration: metrics.Histogram
    batch_size: metrics.Histogram
    batch_duration: metrics.Histogram
    checkout_latency: metrics.Histogram
    checkouts: metrics.Counter
    anomalies: metrics.Counter
    dead_letters: metrics.Counter
    auth_failures: metrics.Counter


def _observe_lag(options: CallbackOptions) -> Iterable[Observation]:
    for source in list(_lag_sources):
        try:
            rows = list(source())
        except Exception:  # a consumer between assignments: report nothing this time
            log.debug("consumer lag unavailable", exc_info=True)
            continue
        for topic, partition, group, lag in rows:
            yield Observation(
                lag,
                {
                    "messaging.destination.name": topic,
                    "messaging.destination.partition.id": str(partition),
                    "messaging.consumer.group.name": group,
                },
            )


def _observe_drift(gauge: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        for source in list(_drift_sources[gauge]):
            for attributes, value in source():
                yield Observation(value, attributes)

    return observe


def add_drift_source(source: DriftSource, gauge: str = "psi") -> None:
    """A drift monitor read at every metrics collection: a detect stage's PSI per scope
    (`psi`), a reason stage's vision surprise per SKU (`vision_surprise`)."""
    _drift_sources[gauge].append(source)


# Instruments field -> (OTel name, unit, description, bucket boundaries: None for a counter)
INSTRUMENTS: dict[str, tuple[str, str, str, tuple[float, ...] | None]] = {
    "events": ("cartstream.stage.events", "{event}", "Events a stage processed", None),
    "duration": (
        "cartstream.stage.duration",
        "s",
        "Processing time of one event (one batch, for detect)",
        SECONDS,
    ),
    "batch_size": (
        "cartstream.detect.batch.size",
        "{frame}",
        "Frames per inference batch",
        SIZES,
    ),
    "batch_duration": (
        "cartstream.detect.batch.duration",
        "s",
        "Decode + inference time of one batch",
        SECONDS,
    ),
    "checkout_latency": (
        "cartstream.checkout.latency",
        "s",
        "The shopper's checkout request to the row written",
        LATENCY,
    ),
    "checkouts": ("cartstream.checkouts", "{checkout}", "Checkouts persisted", None),
    "anomalies": ("cartstream.anomalies", "{anomaly}", "Anomalies persisted", None),
    "dead_letters": (
        "cartstream.dead_letters",
        "{event}",
        "Inputs sent to the dead-letter topic",
        None,
    ),
    "auth_failures": (
        "cartstream.auth.failures",
        "{event}",
        "Cart records that failed authentication (dead-lettered in enforce mode)",
        None,
    ),
}


@lru_cache(maxsize=1)
def instruments() -> Instruments:
    meter = metrics.get_meter("cartstream")
    meter.create_observable_gauge(
        "cartstream.consumer.lag",
        callbacks=[_observe_lag],
        unit="{message}",
        description="Records in the partition not yet processed (high watermark - position)",
    )
    meter.create_observable_gauge(
        "cartstream.drift.psi",
        callbacks=[_observe_drift("psi")],
        unit="{psi}",
        description="Population stability index of live detections against the reference",
    )
    meter.create_observable_gauge(
        "cartstream.drift.vision_surprise",
        callbacks=[_observe_drift("vision_surprise")],
        unit="{surprise}",
        description="-log10 P(vision left this many of a SKU's recent weight-named changes "
        "unconfirmed), under the SKU's honest rate",
    )
    made: dict[str, Any] = {}
    for field, (name, unit, description, buckets) in INSTRUMENTS.items():
        if buckets is None:
            made[field] = meter.create_counter(name, unit=unit, description=description)
        else:
            made[field] = meter.create_histogram(
                name,
                unit=unit,
                description=description,
                explicit_bucket_boundaries_advisory=buckets,
            )
    return Instruments(**made)


def add_lag_source(source: LagSource) -> None:
    _lag_sources.append(source)


def _otlp_exporter(settings: Settings) -> MetricExporter:
    endpoint = str(settings.otel_endpoint)
    if settings.otel_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=endpoint.rstrip("/") + "/v1/metrics")


def setup_metrics(settings: Settings, component: str, prometheus: bool) -> None:
    """Install the meter provider (once per process): OTLP when a collector is configured,
    and the Prometheus registry that `prometheus_text` serves when `prometheus`."""
    global _installed, _prometheus
    if _installed:
        return
    readers: list[MetricReader] = []
    if settings.otel_endpoint and settings.otel_exporter in ("auto", "otlp"):
        readers.append(
            PeriodicExportingMetricReader(
                _otlp_exporter(settings),
                export_interval_millis=settings.otel_metrics_interval_s * 1000,
            )
        )
    if prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
        _prometheus = True
    resource = Resource.create({"service.name": f"{settings.service_name}-{component}"})
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    _installed = True


def prometheus_text() -> tuple[bytes, str]:
    """The Prometheus exposition of every metric (for the worker's `GET /metrics`)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    if not _prometheus:
        return b"# metrics are not set up for Prometheus in this process\n", CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
