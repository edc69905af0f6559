"""`cartstream worker`: build the Faust app for a set of roles and run it until stopped."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import faust

from cartstream.models.catalog import Catalog
from cartstream.schemas.codec import AvroCodec
from cartstream.services.metrics import add_lag_source, prometheus_text, setup_metrics
from cartstream.services.persistence import Repository, make_engine
from cartstream.services.settings import Settings
from cartstream.services.telemetry import setup_tracing
from cartstream.services.topics import ensure_tick_topics, tick_topic_name
from cartstream.streams.anomalies import AnomalyStage
from cartstream.streams.app import STATEFUL_ROLES, create_app
from cartstream.streams.detect import DetectStage
from cartstream.streams.persist import PersistRunner
from cartstream.streams.reason import ReasonStage
from cartstream.streams.reconcile import ReconcileStage
from cartstream.streams.runtime import BatchRunner, Publisher, StageRunner
from cartstream.streams.stage import Stage
from cartstream.streams.tracing import consumer_lag, install_process_spans

log = logging.getLogger(__name__)


def build_app(settings: Settings, roles: Sequence[str], web: bool = False) -> faust.App:
    """The Faust app with one agent per role, traced and metered."""
    setup_tracing(settings, component="worker")
    setup_metrics(settings, component="worker", prometheus=web)
    catalog = Catalog.load(settings.catalog_path)
    app = create_app(settings, roles, web=web)
    publisher = Publisher(app, AvroCodec(), settings.topics.dead_letters)
    ticks = [tick_topic_name(settings.app_id, r) for r in roles if r in STATEFUL_ROLES]
    install_process_spans(app, skip_topics=[settings.topics.frames, *ticks])
    add_lag_source(lambda: consumer_lag(app))
    stages: dict[str, Stage] = {}
    if "detect" in roles:
        detect = DetectStage(settings, catalog)
        BatchRunner(
            app, detect, settings, publisher, settings.detect.max_batch, settings.detect.max_wait_ms
        )
    if "reason" in roles:
        stages["reason"] = ReasonStage(settings, catalog)
    if "anomalies" in roles:
        stages["anomalies"] = AnomalyStage(settings, catalog)
    if "reconcile" in roles:
        stages["reconcile"] = ReconcileStage(settings, catalog)
    for stage in stages.values():
        StageRunner(app, stage, settings, publisher)
    _health_routes(app, settings, roles)

    if "persist" in roles:
        url = settings.database_url.get_secret_value()
        PersistRunner(app, settings, publisher, Repository(make_engine(url)))
    return app


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


def run_worker(
    settings: Settings, roles: Sequence[str], loglevel: str = "info", web: bool = False
) -> None:
    ensure_tick_topics(settings, [r for r in roles if r in STATEFUL_ROLES])
    app = build_app(settings, roles, web=web)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
