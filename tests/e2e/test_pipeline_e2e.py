"""Demo-sized runs through the whole pipeline on the real broker and Postgres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.services.carts.cart_client import CartClient
from cartstream.services.carts.simulate import SimConfig, read_truth, simulate
from cartstream.services.kafka.tail import read_topic
from cartstream.services.kafka.topics import ensure_topics
from cartstream.services.storage.repository import Repository, make_engine
from cartstream.services.tools.harness import WorkerProcess, worker_env

pytestmark = pytest.mark.e2e


# Long on purpose: one scripted run (start, kill, restart, verify) whose steps share state.
def test_four_carts_twenty_sessions_with_a_worker_killed_midway(
    broker_settings: Callable[..., Settings],
    pg_url: str,
    tmp_path: Path,
    catalog: Catalog,
) -> None:
    settings = broker_settings(database_url=pg_url)
    ensure_topics(settings)
    env = worker_env(settings, settings.app_id, pg_url, tmp_path / "ready-1")
    worker = WorkerProcess(env, tmp_path / "worker-1.log")
    repo = Repository(make_engine(pg_url))
    truth_path = tmp_path / "truth.jsonl"
    try:
        worker.wait_ready(tmp_path / "ready-1", 60)
        client = CartClient(settings, tmp_path / "spool")
        config = SimConfig(carts=4, sessions=20, seed=1234, run_id=uuid.uuid4().hex[:6])
        result: dict[str, Any] = {}
        publisher = threading.Thread(
            target=lambda: result.update(
                report=simulate(config, catalog, settings.topics, client, truth_path, speed=0)
            )
        )
        publisher.start()
        while not truth_path.exists():
            time.sleep(0.1)
        truth = read_truth(truth_path)
        requested = [s for s, t in truth.items() if t["outcome"] == "checkout"]
        deadline = time.monotonic() + 120
        while len(repo.checkouts(requested)) < len(requested) // 3:  # a third done: crash
            assert time.monotonic() < deadline, "no progress before the crash"
            time.sleep(0.2)
        worker.stop(kill=True)
        killed_at = len(repo.checkouts(requested))
        worker = WorkerProcess(
            {**env, "CARTSTREAM_READY_FILE": str(tmp_path / "ready-2")}, tmp_path / "worker-2.log"
        )
        publisher.join(timeout=300)
        assert client.close(120)
        deadline = time.monotonic() + 240
        while len(repo.checkouts(requested)) < len(requested):
            assert worker.alive(), (tmp_path / "worker-2.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (
                f"{len(repo.checkouts(requested))}/{len(requested)} checkouts persisted"
            )
            time.sleep(0.5)
        published = defaultdict(list)
        for record, _ in read_topic(settings, settings.topics.checkouts, idle_timeout_s=3):
            published[record["session_id"]].append(record)
    finally:
        worker.stop()
    assert result["report"].checkouts_requested == len(requested)
    assert 0 < killed_at < len(requested)
    rows = repo.checkouts(requested)
    # exactly one persisted checkout per requested session, none for abandoned ones
    assert sorted(r.session_id for r in rows) == sorted(requested)
    abandoned = [s for s, t in truth.items() if t["outcome"] == "abandoned"]
    assert repo.checkouts(abandoned) == []
    for row in rows:
        versions = published[row.session_id]
        assert versions, f"{row.session_id} persisted but never published"
        # a re-published checkout (after the crash) must be the same checkout
        baskets = {json.dumps(v["items"], sort_keys=True) for v in versions}
        assert len(baskets) == 1, f"{row.session_id} published with different baskets"
        assert {v["checkout_id"] for v in versions} == {row.checkout_id}
        assert [(i.sku, i.quantity, i.line_total_cents) for i in row.items] == [
            (i["sku"], i["quantity"], i["line_total_cents"]) for i in versions[0]["items"]
        ]


def _holding(folder: Path) -> list[str]:
    """Processes that name `folder` in their command line or environment, or hold a file under
    it open (the demo's broker writes its log there, its workers their spans): what a run in
    `folder` started and left running. Other tests' brokers and workers, running beside this
    one under xdist, do not count."""
    mark = str(folder.resolve())
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "environ", "open_files"]):
        info = process.info
        named = [*(info["cmdline"] or []), *(info["environ"] or {}).values()]
        named += [f.path for f in info["open_files"] or []]
        if process.pid != os.getpid() and any(mark in text for text in named):
            found.append(f"{process.pid}: {' '.join(info['cmdline'] or [])}")
    return found


def test_demo_command(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTSTREAM_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cartstream",
            "demo",
            "--carts",
            "2",
            "--sessions",
            "3",
            "--speed",
            "0",
            "--run-dir",
            str(tmp_path / "run"),
            "--summary-json",
            str(summary_path),
            "--report",
            str(tmp_path / "report"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    for key in (
        "sessions",
        "checkouts_requested",
        "checkouts_persisted",
        "checkout_accuracy",
        "anomalies_by_kind",
        "latency_ms",
        "events_per_s",
    ):
        assert key in summary
    assert summary["sessions"] == 6
    assert summary["checkouts_persisted"] == summary["checkouts_requested"] > 0
    # the demo's carts sign with a run key and its worker enforces: no honest record refused
    assert "cart signatures enforce" in " ".join(
        (proc.stdout + proc.stderr).split()
    )  # rich wraps lines
    assert "SPOOFED_EVENT" not in summary["anomalies_by_kind"]
    assert 0.0 <= summary["checkout_accuracy"] <= 1.0
    assert summary["latency_ms"]["p50"] is not None
    assert summary["events_per_s"] > 0
    assert "broker.log" in {p.name for p in (tmp_path / "run").iterdir()}
    # the report: plots a person can look at, and one checkout's whole trace
    report = (tmp_path / "report" / "report.md").read_text()
    for plot in ("latency.png", "throughput.png", "anomalies.png"):
        assert f"]({plot})" in report
        assert (tmp_path / "report" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for section in ("## Accuracy", "## Anomalies", "## Latency", "## Throughput"):
        assert section in report
    assert "| reason |" in report and "| detect |" in report  # per-stage percentiles
    assert "INSERT checkouts" in report and "send cart.weights #" in report
    assert _holding(tmp_path) == [], "the demo left a process behind"
