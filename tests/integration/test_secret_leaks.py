"""No secret leaks: with every secret set (cart master keys, a database password, a SASL
password), none appears in what the worker, the demo and the CLI write: logs, spans, metrics,
dead letters, the demo's summary and report, and error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from cartstream.core.settings import Settings
from cartstream.services.kafka.tail import read_messages
from cartstream.services.kafka.topics import ensure_topics
from cartstream.services.tools.harness import WorkerProcess, worker_env
from tests.conftest import PG_ADMIN_URL

CART_KEY = "cart-master-" + uuid.uuid4().hex  # 44 characters
DB_PASSWORD = "db-pw-" + uuid.uuid4().hex
SASL_PASSWORD = "sasl-pw-" + uuid.uuid4().hex
SECRETS = (CART_KEY, DB_PASSWORD, SASL_PASSWORD)


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s[:10] + "..." for s in SECRETS if s.encode() in data]


def files_leaking(folder: Path) -> dict[str, list[str]]:
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and (hit := leaks(path.read_bytes())):
            found[str(path)] = hit
    return found


def fresh_database() -> str:
    """A database on the server reached with a password in its URL (trust auth ignores it, so
    the password travels through every layer without being needed)."""
    name = f"cartstream_leak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres:{DB_PASSWORD}@127.0.0.1:5432/{name}"


def secret_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTSTREAM_")}
    env["CARTSTREAM_CART_AUTH__MODE"] = "enforce"
    env["CARTSTREAM_CART_AUTH__MASTER_KEYS"] = json.dumps({"k1": CART_KEY})
    return env


def test_the_demo_writes_no_secret(tmp_path: Path) -> None:
    url = fresh_database()
    args = ["demo", "--carts", "1", "--sessions", "2", "--speed", "0", "--database-url", url]
    args += ["--run-dir", str(tmp_path / "run"), "--summary-json", str(tmp_path / "summary.json")]
    args += ["--report", str(tmp_path / "rep")]
    run = subprocess.run(
        [sys.executable, "-m", "cartstream", *args],
        env=secret_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "cart signatures enforce" in " ".join(
        (run.stdout + run.stderr).split()
    )  # rich wraps lines
    assert leaks(run.stdout + run.stderr) == []
    assert files_leaking(tmp_path) == {}


def test_the_worker_writes_no_secret_in_logs_metrics_or_dead_letters(
    broker_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    url = fresh_database()
    from cartstream.services.storage.migrate import upgrade

    upgrade(url)
    settings = broker_settings(cart_auth={"mode": "enforce", "master_keys": {"k1": CART_KEY}})
    ensure_topics(settings)
    ready = tmp_path / "ready"
    env = worker_env(settings, settings.app_id, url, ready)
    env["CARTSTREAM_OTEL_EXPORTER"] = "jsonl"
    env["CARTSTREAM_OTEL_JSONL_PATH"] = str(tmp_path / "spans.jsonl")
    worker = WorkerProcess(env, tmp_path / "worker.log", web=True, log_level="debug")
    try:
        worker.wait_ready(ready, timeout_s=60)
        from kafka import KafkaProducer

        producer = KafkaProducer(**settings.kafka.kafka_python_config())
        producer.send(settings.topics.weights, key=b"cart-1", value=b"forged")  # unsigned
        producer.flush()
        producer.close()
        letters = []
        for _ in range(30):
            letters = list(read_messages(settings, settings.topics.dead_letters, idle_timeout_s=1))
            if letters:
                break
        assert letters, "the forged record was not dead-lettered"
        assert all(leaks(m.value) == [] for m in letters)
        port = env["CARTSTREAM_WEB_PORT"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        assert b"cartstream_auth_failures" in metrics
        assert leaks(metrics) == []
    finally:
        worker.stop()
    assert files_leaking(tmp_path) == {}


def test_errors_name_no_secret(broker_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """A SASL login the broker cannot do, and a database that is not there: both fail, and
    their messages carry no password."""
    env = secret_env()
    env["CARTSTREAM_KAFKA__BOOTSTRAP_SERVERS"] = broker_settings().kafka.bootstrap_servers
    env["CARTSTREAM_KAFKA__SECURITY_PROTOCOL"] = "SASL_PLAINTEXT"
    env["CARTSTREAM_KAFKA__SASL_MECHANISM"] = "PLAIN"
    env["CARTSTREAM_KAFKA__SASL_USERNAME"] = "cartstream"
    env["CARTSTREAM_KAFKA__SASL_PASSWORD"] = SASL_PASSWORD
    env["CARTSTREAM_DATABASE_URL"] = f"postgresql+psycopg://u:{DB_PASSWORD}@127.0.0.1:1/nowhere"
    for args in (["db", "upgrade"], ["checkouts", "tail", "--max-records", "1"]):
        done = subprocess.run(
            [sys.executable, "-m", "cartstream", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode != 0, args
        assert leaks(done.stdout + done.stderr) == [], args
