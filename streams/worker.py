"""The worker's Faust app: one agent per role, their stages started, traced and metered.

`services/cli/worker.py` runs it (topics, the database store, the Faust worker)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import faust

from cartstream.core.metrics import (
    add_drift_source,
    add_lag_source,
    prometheus_text,
    setup_metrics,
)
from cartstream.core.settings import Settings
from cartstream.core.telemetry import setup_tracing
from cartstream.exceptions import ConfigurationError
from cartstream.models.catalog import Catalog
from cartstream.schemas.codec import AvroCodec
from cartstream.streams.anomalies import AnomalyStage
from cartstream.streams.app import create_app
from cartstream.streams.batch_runner import BatchRunner
from cartstream.streams.detect import DetectStage
from cartstream.streams.live_basket import serve_live_baskets
from cartstream.streams.persist import CheckoutStore, PersistSink
from cartstream.streams.publish import Publisher
from cartstream.streams.reason import ReasonStage
from cartstream.streams.reconcile import ReconcileStage
from cartstream.streams.runner import StageRunner
from cartstream.streams.sink_runner import SinkRunner
from cartstream.streams.stage import Stage
from cartstream.streams.tracing import consumer_lag, install_process_spans

log = logging.getLogger(__name__)

# the role of each stage (persist, the sink, is the fifth role)
STAGES: dict[str, type[DetectStage | ReasonStage | AnomalyStage | ReconcileStage]] = {
    "detect": DetectStage,
    "reason": ReasonStage,
    "anomalies": AnomalyStage,
    "reconcile": ReconcileStage,
}


def stateful_roles(roles: Sequence[str]) -> list[str]:
    """The roles whose stage keeps a table (and so a changelog and a tick topic)."""
    return [r for r in roles if r in STAGES and STAGES[r].stateful]


def build_app(
    settings: Settings,
    roles: Sequence[str],
    store: CheckoutStore | None = None,
    web: bool = False,
) -> faust.App:
    """The Faust app with one agent per role, traced and metered. `store`: where persist
    writes (required with the persist role). Stages are started here, so a configuration
    mistake (a detector for another catalog, CUDA asked for and absent) stops the worker
    before it joins its group; they are closed when the app shuts down."""
    if "persist" in roles and store is None:
        raise ConfigurationError("the persist role needs a checkout store (database_url)")
    setup_tracing(settings, component="worker")
    setup_metrics(settings, component="worker", prometheus=web)
    catalog = Catalog.load(settings.catalog_path)
    stateful = stateful_roles(roles)
    app = create_app(settings, roles, has_tables=bool(stateful), web=web)
    publisher = Publisher(app, AvroCodec(), settings.topics.dead_letters)
    batched: list[str] = []  # topics consumed in batches: their spans are the runners' own
    add_lag_source(lambda: consumer_lag(app))
    closers: list[Callable[[], None]] = []
    runners: dict[str, StageRunner] = {}
    for role in roles:
        if role not in STAGES:
            continue
        stage: Stage[Any] = STAGES[role](settings, catalog)
        stage.start()
        closers.append(stage.close)
        _meter_drift(stage)
        if isinstance(stage, DetectStage):
            d = settings.detect
            batches = BatchRunner(app, stage, settings, publisher, d.max_batch, d.max_wait_ms)
            closers.insert(0, batches.close)
            batched += stage.inputs()
        else:
            runners[role] = StageRunner(app, stage, settings, publisher)
            batched += runners[role].input_topics()
    if store is not None and "persist" in roles:
        sink = PersistSink(settings, store)
        sink.start()
        closers.insert(0, SinkRunner(app, sink, settings, publisher).close)
        closers.append(sink.close)
    install_process_spans(app, skip_topics=batched)
    _health_routes(app, settings, roles)
    if web and "reconcile" in runners:
        alerts = runners["anomalies"].state_of if "anomalies" in runners else None
        serve_live_baskets(app, settings, catalog, runners["reconcile"].states, alerts)

    async def _close(sender: object, **_: object) -> None:
        for close in closers:
            close()

    app.on_before_shutdown.connect(_close)
    return app


def _meter_drift(stage: Stage[Any]) -> None:
    """The drift gauges read the stage's monitor: detect's PSI, reason's vision surprise."""
    if isinstance(stage, DetectStage):
        psi = stage.drift_readings
        add_drift_source(lambda: [(r.attributes(), r.psi) for r in psi()])
    elif isinstance(stage, ReasonStage):
        vision = stage.vision_drift_readings
        add_drift_source(
            lambda: [(r.attributes(), r.surprise) for r in vision()], gauge="vision_surprise"
        )


def _health_routes(app: faust.App, settings: Settings, roles: Sequence[str]) -> None:
    """Readiness once partitions are assigned and tables recovered: the ready file (when set)
    and, with `--web`, `GET /readyz` (503 until then); `GET /healthz` answers while the event
    loop runs (liveness)."""
    ready: dict[str, bool] = {"ready": False}

    async def _ready(sender: object, **_: object) -> None:
        ready["ready"] = True
        if settings.ready_file is not None:
            settings.ready_file.parent.mkdir(parents=True, exist_ok=True)
            settings.ready_file.write_text(f"{app.conf.id} ready\n")
        log.info("worker ready (partitions assigned, tables recovered)")

    app.on_rebalance_complete.connect(_ready)

    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "app": app.conf.id, "roles": list(roles)})

    async def readyz(web: Any, request: Any) -> Any:
        status = 200 if ready["ready"] else 503
        return web.json({"ready": ready["ready"], "app": app.conf.id}, status=status)

    async def metrics(web: Any, request: Any) -> Any:
        body, content_type = prometheus_text()
        # aiohttp refuses a charset inside content_type; a header is passed through as is
        return web.bytes(body, headers={"Content-Type": content_type})

    app.page("/healthz")(healthz)
    app.page("/readyz")(readyz)
    app.page("/metrics")(metrics)
