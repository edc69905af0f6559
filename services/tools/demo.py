"""`cartstream demo`: the whole system on one machine, with a score at the end.

Steps (each a function below): start the embedded broker unless a bootstrap is given; migrate
the database (SQLite in the run folder unless `--database-url`) and create the topics; start a
worker with every role as a child process; publish simulated carts through the cart client and
wait until every requested checkout is persisted; read back what the pipeline published and
score it against the ground truth. Child processes are always stopped, also on Ctrl-C or error.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url

from cartstream.core.settings import Settings
from cartstream.core.telemetry import flush_tracing
from cartstream.exceptions import CartstreamError
from cartstream.models.catalog import Catalog
from cartstream.models.shopper import ShopperProfile
from cartstream.schemas.records import STEP_ACTIONS
from cartstream.services.carts.cart_client import CartClient
from cartstream.services.carts.simulate import (
    SimConfig,
    SimulationReport,
    plan_carts,
    read_truth,
    simulate,
)
from cartstream.services.kafka.broker import EmbeddedBroker
from cartstream.services.kafka.tail import read_topic
from cartstream.services.kafka.topics import ensure_topics
from cartstream.services.storage.migrate import upgrade
from cartstream.services.storage.repository import Repository
from cartstream.services.tools.harness import WorkerProcess, enforced_cart_auth, worker_env
from cartstream.services.tools.report import write_report
from cartstream.services.tools.scoring import score_anomalies, score_honest, score_run
from cartstream.services.tools.summary import Percentiles, RunSummary

WORKER_READY_S = 90.0


@dataclass(frozen=True)
class DemoConfig:
    carts: int = 4
    sessions: int = 5
    seed: int = 7
    database_url: str | None = None
    run_dir: Path | None = None
    summary_json: Path | None = None
    timeout_s: float = 300.0
    bootstrap: str | None = None  # None: start the embedded broker
    speed: float = 10.0  # carts publish at this multiple of real time (0: as fast as possible)
    mode: str | None = None  # reasoning evidence (fused | vision | weight); None: the settings'
    worker_settings: tuple[tuple[str, str], ...] = ()  # extra CARTSTREAM_* for the worker
    anomalies: bool = True  # inject loss-prevention cases (False: honest shoppers only)
    report_dir: Path | None = None  # write a markdown report with plots here
    console_port: int | None = None  # open `cartstream console` on the run, on this port


@dataclass(frozen=True)
class Run:
    """One demo run's identity and where it keeps things."""

    run_id: str
    folder: Path
    database_url: str
    settings: Settings  # the broker, database and span file of this run

    @property
    def spans(self) -> Path:
        return self.folder / "spans.jsonl"

    @property
    def truth(self) -> Path:
        return self.folder / "truth.jsonl"


def run_demo(config: DemoConfig, settings: Settings, console: Console) -> RunSummary:
    """Run the demo with the CLI's settings; the summary is printed and returned."""
    run_id = uuid.uuid4().hex[:8]
    folder = config.run_dir or Path("cartstream-run") / time.strftime(f"%Y%m%d-%H%M%S-{run_id}")
    folder.mkdir(parents=True, exist_ok=True)
    database_url = config.database_url or f"sqlite:///{(folder / 'cartstream.db').resolve()}"
    with ExitStack() as stack:
        settings = stack.enter_context(_broker(config, settings, folder))
        # the run's spans (when no collector is configured) stay with the run
        settings = settings.with_overrides(
            database_url=database_url,
            otel_jsonl_path=folder / "spans.jsonl",
            cart_auth=enforced_cart_auth(settings),
        )
        run = Run(run_id, folder, database_url, settings)
        console.print(
            f"[bold]cartstream demo[/] run {run_id}: broker {settings.kafka.bootstrap_servers}"
            f", database {make_url(database_url).render_as_string()}, folder {folder}"
            f", cart signatures {settings.cart_auth.mode}"
        )
        upgrade(database_url)
        ensure_topics(settings)
        worker = stack.enter_context(_worker(config, run, console))
        if config.console_port is not None:
            urls = [worker.web_url] if worker.web_url else []
            stack.enter_context(_console(config.console_port, run, urls, console))
        client = CartClient(settings, folder / "spool")
        stack.callback(client.close, timeout_s=5)
        report, elapsed = _publish_and_wait(config, run, client, worker, console)
        summary = _score(config, run, report, elapsed)
        summary.print(console)
        client.close(timeout_s=5)
        flush_tracing()
        if config.report_dir is not None:
            worker.stop()  # its last spans are written as it exits
            console.print(f"report: {write_report(config.report_dir, summary, run.spans)}")
        elif run.spans.exists():
            console.print(f"follow a checkout: cartstream trace CHECKOUT_ID --spans {run.spans}")
        if config.summary_json:
            config.summary_json.parent.mkdir(parents=True, exist_ok=True)
            config.summary_json.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
        if config.console_port is not None:
            console.print("[bold]the console stays open on the run[/]; Ctrl-C stops the demo")
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
        return summary
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


@contextmanager
def _broker(config: DemoConfig, settings: Settings, folder: Path) -> Iterator[Settings]:
    """The settings pointed at the given bootstrap, or at an embedded broker (stopped after)."""
    if config.bootstrap:
        kafka = {**settings.kafka.model_dump(), "bootstrap_servers": config.bootstrap}
        yield settings.with_overrides(kafka=kafka)
        return
    broker = EmbeddedBroker(log_path=folder / "broker.log")
    broker.start()
    try:
        kafka = {**settings.kafka.model_dump(), "bootstrap_servers": broker.bootstrap}
        yield settings.with_overrides(kafka=kafka, broker_profile="tansu")
    finally:
        broker.stop()


@contextmanager
def _console(port: int, run: Run, worker_urls: list[str], console: Console) -> Iterator[None]:
    """`cartstream console` on the run (its store view replayed from the topics), with an admin
    login made for it; stopped after."""
    from cartstream.services.console.app import ConsoleThread
    from cartstream.services.storage.repository import make_engine
    from cartstream.services.storage.staff import StaffDirectory

    password = secrets.token_urlsafe(12)
    engine = make_engine(run.database_url)
    StaffDirectory(engine).set_user("demo", password, None)
    engine.dispose()
    settings = run.settings.with_overrides(
        console={
            **run.settings.console.model_dump(),
            "port": port,
            "worker_urls": worker_urls,
            "replay": True,
        }
    )
    running = ConsoleThread(settings).start()
    console.print(
        f"[bold]console[/] {running.url}/ — log in as [bold]demo[/] with password "
        f"[bold]{password}[/] (an admin: every store)"
    )
    try:
        yield
    finally:
        running.stop()


@contextmanager
def _worker(config: DemoConfig, run: Run, console: Console) -> Iterator[WorkerProcess]:
    """A worker with every role, ready (partitions assigned); stopped after."""
    ready = run.folder / "worker.ready"
    env = worker_env(run.settings, f"demo-{run.run_id}", run.database_url, ready)
    if config.mode:
        env["CARTSTREAM_REASON__MODE"] = config.mode
    env.update(config.worker_settings)
    # with the console, the worker serves live baskets (its web server)
    worker = WorkerProcess(env, run.folder / "worker.log", web=config.console_port is not None)
    try:
        with console.status("starting the worker (joining its consumer group)..."):
            worker.wait_ready(ready, timeout_s=WORKER_READY_S)
        yield worker
    finally:
        worker.stop()


def _sim_config(config: DemoConfig, run: Run) -> SimConfig:
    profile = ShopperProfile() if config.anomalies else ShopperProfile().honest()
    return SimConfig(
        carts=config.carts,
        sessions=config.sessions,
        seed=config.seed,
        run_id=run.run_id,
        profile=profile,
    )


def _publish_and_wait(
    config: DemoConfig, run: Run, client: CartClient, worker: WorkerProcess, console: Console
) -> tuple[SimulationReport, float]:
    """Publish the simulated carts, then wait for every requested checkout's row."""
    settings = run.settings
    catalog = Catalog.load(settings.catalog_path)
    sim = _sim_config(config, run)
    requested = sum(1 for s in plan_carts(sim, catalog) if s.plan.outcome == "checkout")
    repo = Repository.from_url(run.database_url)
    started = time.monotonic()
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        sent = progress.add_task("events published", total=None)
        done = progress.add_task("checkouts persisted", total=requested)

        def on_event(_topic: str, counts: Counter[str]) -> None:
            total = sum(counts.values())
            if total % 200 == 0:
                progress.update(sent, completed=total)

        report = simulate(
            sim, catalog, settings.topics, client, run.truth, on_event, speed=config.speed
        )
        total = sum(report.events.values())
        progress.update(sent, completed=total, total=total)
        client.flush(timeout_s=config.timeout_s)
        deadline = started + config.timeout_s
        while time.monotonic() < deadline:
            persisted = repo.count_checkouts()
            progress.update(done, completed=persisted)
            if persisted >= requested:
                break
            if not worker.alive():
                raise CartstreamError(f"worker exited early; see {worker.log_path}")
            time.sleep(0.25)
    repo.close()
    return report, time.monotonic() - started


def _score(config: DemoConfig, run: Run, report: SimulationReport, elapsed: float) -> RunSummary:
    """What the pipeline published and persisted, scored against the ground truth."""
    settings, topics = run.settings, run.settings.topics
    detected = sum(1 for _ in read_topic(settings, topics.detections, idle_timeout_s=1.0))
    changes = [r for r, _ in read_topic(settings, topics.basket_changes, idle_timeout_s=2.0)]
    alerts = [r for r, _ in read_topic(settings, topics.anomalies, idle_timeout_s=1.0)]
    truth = read_truth(run.truth)
    requested = [sid for sid, t in truth.items() if t["outcome"] == "checkout"]
    repo = Repository.from_url(run.database_url)
    try:
        rows = {row.session_id: row for row in repo.checkouts(requested)}
        by_kind = dict(repo.anomalies_by_kind())
    finally:
        repo.close()
    baskets = {sid: {i.sku: i.quantity for i in row.items} for sid, row in rows.items()}
    latencies = [
        float(c["published_ms"] - c["source_produced_ms"])
        for c in changes
        if c["action"] in STEP_ACTIONS
    ]
    return RunSummary(
        run_dir=str(run.folder),
        seed=config.seed,
        mode=config.mode or settings.reason.mode,
        speed=config.speed,
        sessions=len(truth),
        checkouts_requested=len(requested),
        checkouts_persisted=len(rows),
        accuracy=score_run(truth, baskets, changes),
        honest=score_honest(truth, baskets),
        anomaly_scores=score_anomalies(truth, alerts),
        status=dict(Counter(row.status for row in rows.values())),
        anomalies_by_kind=by_kind,
        latency_ms=Percentiles.of(latencies),
        latencies_ms=latencies,
        basket_changes=len(latencies),
        frames_detected=detected,
        events=sum(report.events.values()),
        events_by_topic=dict(report.events),
        seconds=round(elapsed, 2),
    )
