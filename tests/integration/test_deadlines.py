"""Deadlines wait for the backlog (streams/backlog.py): a worker that starts behind, with every
session already in the log, holds its deadlines until it has read its inputs, and closes no
checkout "without its last weight packets".

Whether a worker without the hold would fire early here depends on the order Faust delivers
the partitions in (in the runs tried, it read `cart.sessions` late, and nothing fired early);
the failure itself was seen in the kill test's log. So this test asserts the hold: the worker
says its deadlines waited, and no session's marker is incomplete.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaProducer

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import WEIGHT_PACKET
from cartstream.services.carts.cart_client import CartClient
from cartstream.services.carts.simulate import SimConfig, read_truth, simulate
from cartstream.services.kafka.tail import read_topic
from cartstream.services.kafka.topics import ensure_topics
from cartstream.services.storage.repository import Repository, make_engine
from cartstream.services.tools.harness import WorkerProcess, worker_env


def publish_weights_of_other_carts(settings: Settings, count: int) -> None:
    """`count` valid weight packets of 64 carts that never check out, spread over every
    partition (plain batched sends: a consumer's fetches are exact on Tansu)."""
    codec, now = AvroCodec(), int(time.time() * 1000)
    producer = KafkaProducer(**settings.kafka.kafka_python_config(), linger_ms=20)
    for i in range(count):
        cart = f"other-{i % 64}"
        packet = {
            "event_id": f"other-{i}",
            "cart_id": cart,
            "store_id": "store-1",
            "session_id": f"{cart}-session",
            "sequence": i // 64,
            "start_time_ms": now - 60_000 + (i // 64) * 20,
            "sample_rate_hz": 50.0,
            "samples_g": [0.0],
        }
        value = codec.encode(WEIGHT_PACKET, packet)
        producer.send(settings.topics.weights, key=cart.encode(), value=value)
    producer.flush(60)
    producer.close()


def test_a_worker_behind_its_inputs_closes_no_checkout_before_reading_them(
    broker_settings: Callable[..., Settings],
    pg_url: str,
    tmp_path: Path,
    catalog: Catalog,
) -> None:
    settings = broker_settings(database_url=pg_url)
    ensure_topics(settings)
    # everything is in the log before the worker starts, and the shoppers' weight packets
    # queue behind 24 000 of other carts' on every partition: the sessions topic is read in a
    # moment, the packets take seconds, and a 1 s checkout wait fires long before that
    publish_weights_of_other_carts(settings, 24_000)
    client = CartClient(settings, tmp_path / "spool")
    config = SimConfig(carts=6, sessions=3, seed=77, run_id=uuid.uuid4().hex[:6])
    simulate(config, catalog, settings.topics, client, tmp_path / "truth.jsonl", speed=0)
    assert client.close(60)
    truth = read_truth(tmp_path / "truth.jsonl")
    requested = [s for s, t in truth.items() if t["outcome"] == "checkout"]
    env = worker_env(settings, settings.app_id, pg_url, tmp_path / "ready")
    env.update(
        {
            "CARTSTREAM_REASON__CHECKOUT_WAIT_S": "1",
            "CARTSTREAM_REASON__MODE": "weight",
            "CARTSTREAM_DETECT__ENABLED": "false",
        }
    )
    worker = WorkerProcess(env, tmp_path / "worker.log", log_level="info")
    repo = Repository(make_engine(pg_url))
    try:
        worker.wait_ready(tmp_path / "ready", 60)
        deadline = time.monotonic() + 180
        while len(repo.checkouts(requested)) < len(requested):
            assert worker.alive(), (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (
                f"{len(repo.checkouts(requested))}/{len(requested)} checkouts persisted"
            )
            time.sleep(0.5)
        markers = [
            record
            for record, _ in read_topic(settings, settings.topics.basket_changes, idle_timeout_s=3)
            if record["action"] in ("CHECKOUT_REQUESTED", "ABANDONED")
        ]
    finally:
        worker.stop()
    log = (tmp_path / "worker.log").read_text()
    assert "without weight packet" not in log
    assert sorted(m["session_id"] for m in markers) == sorted(truth)
    assert [m["session_id"] for m in markers if m["incomplete"]] == []
    assert "wait for records not processed yet" in log  # it was behind, and its deadlines held
