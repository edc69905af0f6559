"""`cartstream demo`: the whole system on one machine, with a score at the end.

Starts the embedded broker (unless a bootstrap is configured), migrates the database (SQLite in
the run folder unless `--database-url`), creates topics, starts a worker with every role as a
child process, publishes simulated carts through the cart client, waits until every requested
checkout is persisted, then scores the run against the ground truth. Child processes are always
stopped, also on Ctrl-C or error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url

from cartstream.exceptions import CartstreamError
from cartstream.models.catalog import Catalog
from cartstream.models.shopper import ShopperProfile
from cartstream.services.broker import EmbeddedBroker, free_port
from cartstream.services.cart_client import CartClient
from cartstream.services.migrate import upgrade
from cartstream.services.persistence import Repository, make_engine
from cartstream.services.report import write_report
from cartstream.services.scoring import score_anomalies, score_run
from cartstream.services.settings import Settings, load_settings
from cartstream.services.simulate import SimConfig, plan_carts, read_truth, simulate
from cartstream.services.tail import read_topic
from cartstream.services.telemetry import flush_tracing
from cartstream.services.topics import ensure_topics


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


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(arr, 50)), 1),
        "p99": round(float(np.percentile(arr, 99)), 1),
    }


class WorkerProcess:
    """`cartstream worker` as a child process with its own settings environment."""

    def __init__(
        self, env: dict[str, str], log_path: Path, roles: str = "all", web: bool = False
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cartstream",
                "--log-level",
                "warning",
                "worker",
                "--roles",
                roles,
                "--web" if web else "--no-web",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, ready_file: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready_file.exists():
            if not self.alive():
                raise CartstreamError(f"worker exited during start-up; see {self.log_path}")
            if time.monotonic() > deadline:
                raise CartstreamError(
                    f"worker not ready after {timeout_s:.0f} s; see {self.log_path}"
                )
            time.sleep(0.1)

    def stop(self, kill: bool = False, timeout_s: float = 20.0) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()


def worker_env(
    settings: Settings, app_id: str, database_url: str, ready_file: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTSTREAM_")}
    env.update(
        {
            "CARTSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "CARTSTREAM_BROKER_PROFILE": settings.broker_profile,
            "CARTSTREAM_DATABASE_URL": database_url,
            "CARTSTREAM_APP_ID": app_id,
            "CARTSTREAM_WEB_PORT": str(free_port()),
            "CARTSTREAM_READY_FILE": str(ready_file),
            "CARTSTREAM_OTEL_JSONL_PATH": str(settings.otel_jsonl_path.absolute()),
        }
    )
    # every stage shares the demo machine: one inference thread leaves a core for the rest
    env.setdefault("CARTSTREAM_DETECT__THREADS", os.environ.get("CARTSTREAM_DETECT__THREADS", "1"))
    for key, value in os.environ.items():  # keep the user's other settings (topics, SASL, ...)
        if key.startswith("CARTSTREAM_") and key not in env:
            env[key] = value
    return env


def score(
    repo: Repository, truth: dict[str, dict[str, Any]], changes: list[dict[str, Any]]
) -> dict[str, Any]:
    """Accuracy against ground truth, from what was persisted and published."""
    requested = [sid for sid, t in truth.items() if t["outcome"] == "checkout"]
    rows = {row.session_id: row for row in repo.checkouts(requested)}
    baskets = {sid: {i.sku: i.quantity for i in row.items} for sid, row in rows.items()}
    accuracy = score_run(truth, baskets, changes)
    latencies = [
        float(c["published_ms"] - c["source_produced_ms"])
        for c in changes
        if c["action"] in ("ADD", "REMOVE", "UNKNOWN")
    ]
    statuses = Counter(row.status for row in rows.values())
    return {
        "sessions": len(truth),
        "checkouts_requested": len(requested),
        "checkouts_persisted": len(rows),
        "checkout_accuracy": accuracy["cacc"],
        "accuracy": accuracy,
        "status": dict(statuses),
        "anomalies_by_kind": dict(repo.anomalies_by_kind()),
        "latency_ms": _percentiles(latencies),
        "latencies_ms": latencies,  # every basket change's, for pooling across runs
        "basket_changes": len(latencies),
    }


def run_demo(config: DemoConfig, console: Console) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    run_dir = config.run_dir or Path("cartstream-run") / time.strftime(f"%Y%m%d-%H%M%S-{run_id}")
    run_dir.mkdir(parents=True, exist_ok=True)
    database_url = config.database_url or f"sqlite:///{(run_dir / 'cartstream.db').resolve()}"
    base = load_settings()
    broker = None if config.bootstrap else EmbeddedBroker(log_path=run_dir / "broker.log")
    worker: WorkerProcess | None = None
    client: CartClient | None = None
    try:
        if broker is not None:
            broker.start()
            base = base.with_overrides(
                kafka={**base.kafka.model_dump(), "bootstrap_servers": broker.bootstrap},
                broker_profile="tansu",
            )
        elif config.bootstrap:
            base = base.with_overrides(
                kafka={**base.kafka.model_dump(), "bootstrap_servers": config.bootstrap}
            )
        # the run's spans (when no collector is configured) stay with the run
        spans = run_dir / "spans.jsonl"
        settings = base.with_overrides(database_url=database_url, otel_jsonl_path=spans)
        console.print(
            f"[bold]cartstream demo[/] run {run_id}: broker {settings.kafka.bootstrap_servers}"
            f", database {make_url(database_url).render_as_string()}, folder {run_dir}"
        )
        upgrade(database_url)
        ensure_topics(settings)
        ready = run_dir / "worker.ready"
        env = worker_env(settings, f"demo-{run_id}", database_url, ready)
        if config.mode:
            env["CARTSTREAM_REASON__MODE"] = config.mode
        env.update(config.worker_settings)
        worker = WorkerProcess(env, run_dir / "worker.log")
        with console.status("starting the worker (joining its consumer group)..."):
            worker.wait_ready(ready, timeout_s=90)
        catalog = Catalog.load(settings.catalog_path)
        profile = ShopperProfile() if config.anomalies else ShopperProfile().honest()
        sim = SimConfig(
            carts=config.carts,
            sessions=config.sessions,
            seed=config.seed,
            run_id=run_id,
            profile=profile,
        )
        truth_path = run_dir / "truth.jsonl"
        requested = sum(1 for s in plan_carts(sim, catalog) if s.plan.outcome == "checkout")
        repo = Repository(make_engine(database_url))
        client = CartClient(settings, run_dir / "spool")
        started = time.monotonic()
        with Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            sent = progress.add_task("events published", total=None)
            done = progress.add_task("checkouts persisted", total=requested)

            def on_event(_topic: str, counts: Counter[str]) -> None:
                total = sum(counts.values())
                if total % 200 == 0:
                    progress.update(sent, completed=total)

            report = simulate(
                sim, catalog, settings.topics, client, truth_path, on_event, speed=config.speed
            )
            progress.update(
                sent, completed=sum(report.events.values()), total=sum(report.events.values())
            )
            client.flush(timeout_s=config.timeout_s)
            deadline = started + config.timeout_s
            persisted = 0
            while time.monotonic() < deadline:
                persisted = repo.count_checkouts()
                progress.update(done, completed=persisted)
                if persisted >= requested:
                    break
                if not worker.alive():
                    raise CartstreamError(f"worker exited early; see {worker.log_path}")
                time.sleep(0.25)
        elapsed = time.monotonic() - started
        detected = sum(
            1 for _ in read_topic(settings, settings.topics.detections, idle_timeout_s=1.0)
        )
        changes = [
            r for r, _ in read_topic(settings, settings.topics.basket_changes, idle_timeout_s=2.0)
        ]

        alerts = [r for r, _ in read_topic(settings, settings.topics.anomalies, idle_timeout_s=1.0)]
        truth = read_truth(truth_path)
        summary = score(repo, truth, changes)
        summary["anomaly_scores"] = score_anomalies(truth, alerts)
        events = sum(report.events.values())
        summary.update(
            {
                "events": events,
                "events_by_topic": dict(report.events),
                "seconds": round(elapsed, 2),
                "events_per_s": round(events / elapsed, 1) if elapsed else None,
                "run_dir": str(run_dir),
                "seed": config.seed,
                "frames_detected": detected,
                "speed": config.speed,
                "mode": config.mode or settings.reason.mode,
            }
        )
        _print_summary(console, summary)
        client.close(timeout_s=5)
        client = None
        flush_tracing()
        if config.report_dir is not None:
            worker.stop()  # its last spans are written as it exits
            written = write_report(config.report_dir, summary, spans)
            console.print(f"report: {written}")
        elif spans.exists():
            console.print(f"follow a checkout: cartstream trace CHECKOUT_ID --spans {spans}")
        if config.summary_json:
            config.summary_json.parent.mkdir(parents=True, exist_ok=True)
            config.summary_json.write_text(json.dumps(summary, indent=2) + "\n")
        return summary
    finally:
        if client is not None:
            client.close(timeout_s=5)
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()


def _print_summary(console: Console, s: dict[str, Any]) -> None:
    table = Table(title="cartstream demo", show_header=False)
    rows = [
        ("sessions", s["sessions"]),
        ("checkouts requested", s["checkouts_requested"]),
        ("checkouts persisted", s["checkouts_persisted"]),
        ("reasoning", s["mode"]),
        ("checkout accuracy (cAcc)", s["checkout_accuracy"]),
        ("count error per checkout (ACD)", s["accuracy"]["acd"]),
        (
            "basket changes precision / recall",
            f"{s['accuracy']['precision']} / {s['accuracy']['recall']}",
        ),
        ("decisions", ", ".join(f"{k} {v}" for k, v in sorted(s["status"].items())) or "-"),
        (
            "anomalies",
            ", ".join(f"{k} {v}" for k, v in sorted(s["anomalies_by_kind"].items())) or "none",
        ),
        ("latency p50 / p99 (ms)", f"{s['latency_ms']['p50']} / {s['latency_ms']['p99']}"),
        ("frames detected", s["frames_detected"]),
        ("events", s["events"]),
        ("events/s", s["events_per_s"]),
        ("wall time (s)", s["seconds"]),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
