"""A real worker process on the real broker and Postgres: good sessions become checkouts, bad
input becomes dead letters with reasons, and the worker keeps going."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from kafka import KafkaProducer

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.inference import DetectorRuntime
from cartstream.models.render import encode_jpeg
from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import CART_FRAME, SESSION_EVENT, WEIGHT_PACKET
from cartstream.services.carts.cart_client import CartClient
from cartstream.services.carts.simulate import SimConfig, SimulationReport, read_truth, simulate
from cartstream.services.cli.main import cli
from cartstream.services.kafka.tail import read_topic
from cartstream.services.kafka.topics import ensure_topics
from cartstream.services.storage.repository import Repository, make_engine
from cartstream.services.tools.harness import WorkerProcess, worker_env


def bad_inputs(settings: Settings) -> list[tuple[str, bytes, str]]:
    """(topic, value, expected reason) for each kind of bad input."""
    codec, now = AvroCodec(), int(time.time() * 1000)
    ids = {"cart_id": "cart-bad", "store_id": "s", "session_id": "bad-session"}
    packet = {
        "event_id": "b1",
        **ids,
        "sequence": 0,
        "start_time_ms": now - 1000,
        "sample_rate_hz": 50.0,
        "samples_g": [1.0, float("nan")],
    }
    frame = {
        "event_id": "b2",
        **ids,
        "camera_id": 0,
        "sequence": 0,
        "capture_time_ms": now,
        "width": 8,
        "height": 8,
        "jpeg": b"\xff\xd8\xff\xe0 not a jpeg",
    }
    empty = {**frame, "event_id": "b3", "jpeg": b""}
    future = {
        "event_id": "b4",
        **ids,
        "kind": "STARTED",
        "time_ms": now + 3_600_000,
        "last_weight_sequence": -1,
        "last_frame_sequence": -1,
    }
    negative = {**packet, "event_id": "b5", "samples_g": [-9000.0]}
    no_session = {**packet, "event_id": "b6", "session_id": "", "samples_g": [5.0]}
    ok_image = encode_jpeg(np.zeros((8, 8, 3), dtype=np.uint8))
    wrong_schema = codec.encode(CART_FRAME, {**frame, "event_id": "b7", "jpeg": ok_image})
    t = settings.topics
    return [
        (t.weights, b'{"weight": 12}', "bad marker"),
        (t.weights, codec.encode(WEIGHT_PACKET, packet), "NaN"),
        (t.frames, codec.encode(CART_FRAME, frame), "undecodable JPEG"),
        (t.frames, codec.encode(CART_FRAME, empty), "empty frame"),
        (t.sessions, codec.encode(SESSION_EVENT, future), "in the future"),
        (t.weights, codec.encode(WEIGHT_PACKET, negative), "negative weight"),
        (t.weights, codec.encode(WEIGHT_PACKET, no_session), "missing session_id"),
        (t.weights, wrong_schema, "wrong schema"),
    ]


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def run_sessions(
    settings: Settings, tmp_path: Path, catalog: Catalog, seed: int
) -> tuple[SimulationReport, list[str], Repository]:
    """2 carts x 2 sessions through the cart client; waits until their checkouts are rows."""
    client = CartClient(settings, tmp_path / "spool")
    report = simulate(
        SimConfig(carts=2, sessions=2, seed=seed, run_id=uuid.uuid4().hex[:6]),
        catalog,
        settings.topics,
        client,
        tmp_path / "truth.jsonl",
    )
    assert client.close(60)
    truth = read_truth(tmp_path / "truth.jsonl")
    requested = [s for s, t in truth.items() if t["outcome"] == "checkout"]
    repo = Repository(make_engine(settings.database_url.get_secret_value()))
    wait_for(lambda: len(repo.checkouts(requested)) == len(requested), 90, "checkouts")
    return report, requested, repo


@dataclass
class WorkerRun:
    """One worker (every role, web on) fed bad input and 2 carts x 2 sessions, then stopped."""

    settings: Settings
    bad: list[tuple[str, bytes, str]]
    health: dict[str, Any]  # path -> the JSON it answered while the worker ran
    report: SimulationReport
    requested: list[str]
    repo: Repository
    letters: list[dict[str, Any]]
    detections: list[dict[str, Any]]
    alive_at_end: bool


@pytest.fixture(scope="module")
def run(
    broker_settings: Callable[..., Settings],
    pg_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    catalog: Catalog,
) -> WorkerRun:
    tmp_path = tmp_path_factory.mktemp("worker")
    settings = broker_settings(database_url=pg_url)
    ensure_topics(settings)
    ready = tmp_path / "ready"
    env = worker_env(settings, settings.app_id, pg_url, ready)
    worker = WorkerProcess(env, tmp_path / "worker.log", web=True)
    try:
        worker.wait_ready(ready, timeout_s=60)
        health = {}
        for path in ("/healthz", "/readyz"):
            url = f"http://127.0.0.1:{env['CARTSTREAM_WEB_PORT']}{path}"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
                health[path] = json.loads(response.read())
        producer = KafkaProducer(**settings.kafka.kafka_python_config())
        bad = bad_inputs(settings)
        for topic, value, _ in bad:
            producer.send(topic, key=b"cart-bad", value=value).get(timeout=10)
        producer.close()
        report, requested, repo = run_sessions(settings, tmp_path, catalog, seed=21)
        letters = [
            r for r, _ in read_topic(settings, settings.topics.dead_letters, idle_timeout_s=2)
        ]
        detections: list[dict[str, Any]] = []

        def all_detected() -> bool:
            detections[:] = [
                r for r, _ in read_topic(settings, settings.topics.detections, idle_timeout_s=1)
            ]
            return len(detections) >= report.events[settings.topics.frames]

        wait_for(all_detected, 60, "detections")
        alive = worker.alive()
    finally:
        worker.stop()
    return WorkerRun(settings, bad, health, report, requested, repo, letters, detections, alive)


def trace_id(msg: Any) -> str | None:
    value = dict(msg.headers or []).get("traceparent")  # bad inputs have none
    return bytes(value).decode().split("-")[1] if value else None


def test_the_worker_answers_health_and_readiness(run: WorkerRun) -> None:
    assert run.health["/healthz"]["status"] == "ok"
    assert run.health["/readyz"]["ready"] is True


def test_every_requested_session_becomes_one_checkout_row(run: WorkerRun) -> None:
    assert run.report.checkouts_requested == len(run.requested) > 0
    rows = run.repo.checkouts(run.requested)
    assert len({r.checkout_id for r in rows}) == len(rows) == len(run.requested)
    assert run.alive_at_end  # bad input never stopped it


def test_each_bad_input_is_a_dead_letter_with_its_reason(run: WorkerRun) -> None:
    assert len(run.letters) == len(run.bad)
    reasons = sorted(letter["reason"] for letter in run.letters)
    for _, value, reason in run.bad:
        match = [letter for letter in run.letters if reason in letter["reason"]]
        assert match, f"no dead letter says {reason!r}: {reasons}"
        assert match[0]["payload"] == value and match[0]["source_key"] == b"cart-bad"
        assert match[0]["source_offset"] >= 0


def test_one_detection_per_frame_stamped_with_the_model_version(run: WorkerRun) -> None:
    frames_sent = run.report.events[run.settings.topics.frames]
    assert len({d["frame_event_id"] for d in run.detections}) == frames_sent
    assert {d["model_version"] for d in run.detections} == {DetectorRuntime().version}
    assert sum(1 for d in run.detections if d["boxes"]) > frames_sent / 2


def test_a_retailer_tails_checkouts_with_nothing_but_the_avsc_files(run: WorkerRun) -> None:
    args = ["--bootstrap", run.settings.kafka.bootstrap_servers, "checkouts", "tail"]
    result = CliRunner().invoke(cli, [*args, "--max", str(len(run.requested)), "--json"], obj={})
    assert result.exit_code == 0, result.output
    tailed: list[dict[str, Any]] = [json.loads(line) for line in result.output.splitlines()]
    assert {c["session_id"] for c in tailed} == set(run.requested)
    rows = {r.session_id: r.checkout_id for r in run.repo.checkouts(run.requested)}
    for c in tailed:
        persisted = run.repo.basket_of(c["session_id"])
        assert persisted == {i["sku"]: i["quantity"] for i in c["items"]}
        assert c["checkout_id"] == rows[c["session_id"]]


def test_checkouts_and_changes_continue_their_carts_traces(run: WorkerRun) -> None:
    settings = run.settings
    requests = {
        r["session_id"]: trace_id(m)
        for r, m in read_topic(settings, settings.topics.sessions, idle_timeout_s=2)
        if r["kind"] == "CHECKOUT_REQUESTED"
    }
    published = list(read_topic(settings, settings.topics.checkouts, idle_timeout_s=2))
    assert published
    for record, msg in published:
        # one trace context per record: Faust's sensor reads headers, only the sender writes
        assert [key for key, _ in msg.headers or []].count("traceparent") == 1
        assert trace_id(msg) is not None
        assert trace_id(msg) == requests[record["session_id"]]
    packets = {
        trace_id(m) for _, m in read_topic(settings, settings.topics.weights, idle_timeout_s=2)
    }
    changes = [
        (r, m)
        for r, m in read_topic(settings, settings.topics.basket_changes, idle_timeout_s=2)
        if r["action"] == "ADD"
    ]
    assert changes and all(trace_id(m) in packets for _, m in changes)
    assert all([k for k, _ in m.headers or []].count("traceparent") == 1 for _, m in changes)
