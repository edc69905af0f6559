"""Through the real broker and Postgres, a worker in `enforce` mode: honest signed carts check
out as usual, while a forged cart, a replayed packet, cart A's key used for cart B and a cart on
a revoked key each end as an AUTH dead letter and a SPOOFED_EVENT alert, and change no basket."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from sqlalchemy import text

from cartstream.core.cart_auth import Keyring
from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.schemas.codec import SCHEMA_HEADER, AvroCodec
from cartstream.schemas.records import SESSION_EVENT
from cartstream.services.carts.simulate import read_truth
from cartstream.services.kafka.tail import read_messages, read_topic
from cartstream.services.kafka.topics import ensure_topics
from cartstream.services.storage.repository import make_engine
from cartstream.services.tools.harness import WorkerProcess, worker_env
from tests.integration.test_worker import run_sessions

OLD, CURRENT, NEXT = "k0-" + "o" * 40, "k1-" + "c" * 40, "k2-" + "n" * 40
CODEC = AvroCodec()


def rogue_session_event(cart: str) -> tuple[bytes, bytes, dict[str, bytes]]:
    record = {
        "event_id": f"rogue-{uuid.uuid4().hex}",
        "cart_id": cart,
        "store_id": "store-1",
        "session_id": f"rogue-session-{cart}",
        "kind": "STARTED",
        "time_ms": now_ms(),
    }
    value = CODEC.encode(SESSION_EVENT, record)
    return cart.encode(), value, dict(CODEC.headers(SESSION_EVENT))


def signed_by(keyring: Keyring, signer_cart: str, key_id: str, cart: str) -> Any:
    key, value, headers = rogue_session_event(cart)
    signer = keyring.signer(signer_cart, key_id)
    headers.update(signer.headers("cart.sessions", key, value, headers[SCHEMA_HEADER]))
    return key, value, headers


def test_spoofed_records_are_refused_and_honest_carts_check_out(
    broker_settings: Callable[..., Settings], pg_url: str, tmp_path: Path, catalog: Catalog
) -> None:
    settings = broker_settings(
        database_url=pg_url,
        cart_auth={
            "mode": "enforce",
            "master_keys": {"k0": OLD, "k1": CURRENT, "k2": NEXT},
            "signing_key_id": "k1",  # carts still on k1 while k2 rolls out: both live
            "revoked_key_ids": ["k0"],
        },
    )
    ensure_topics(settings)
    ready = tmp_path / "ready"
    worker = WorkerProcess(worker_env(settings, settings.app_id, pg_url, ready), tmp_path / "w.log")
    keyring = Keyring({"k0": OLD.encode(), "k1": CURRENT.encode(), "k2": NEXT.encode()})
    try:
        worker.wait_ready(ready, timeout_s=60)
        _, sessions, repo = run_sessions(settings, tmp_path, catalog, seed=3)  # honest carts
        truth = read_truth(tmp_path / "truth.jsonl")
        honest_cart = next(iter(truth.values()))["cart_id"]

        # a captured honest record, sent again by a rogue producer
        captured = next(
            m for m in read_messages(settings, settings.topics.sessions, idle_timeout_s=2)
        )
        forger = Keyring({"k1": b"f" * 40})  # the right key id, not the store's key
        attacks = {
            "unsigned": rogue_session_event("cart-x"),
            "forged": signed_by(forger, "cart-x", "k1", "cart-x"),
            "replayed": (captured.key, captured.value, dict(captured.headers)),
            "cart A's key for cart B": signed_by(keyring, "cart-a", "k1", honest_cart),
            "revoked key": signed_by(keyring, "cart-y", "k0", "cart-y"),
        }
        rotated = signed_by(keyring, "cart-z", "k2", "cart-z")  # a cart already on the new key
        producer = KafkaProducer(**settings.kafka.kafka_python_config())
        for key, value, headers in [*attacks.values(), rotated]:
            producer.send(
                settings.topics.sessions, key=key, value=value, headers=list(headers.items())
            )
        producer.flush()
        producer.close()

        deadline = time.monotonic() + 120
        letters: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(letters) < len(attacks):
            letters = [
                r
                for r, _ in read_topic(settings, settings.topics.dead_letters, idle_timeout_s=2)
                if r["error_type"] == "AUTH"
            ]
        reasons = sorted(r["reason"] for r in letters)
        assert len(letters) == len(attacks), reasons
        assert all(r.startswith("auth: ") for r in reasons)
        assert sum("unsigned" in r for r in reasons) == 1
        assert sum("bad signature for cart 'cart-x'" in r for r in reasons) == 1
        assert sum("replayed counter" in r for r in reasons) == 1
        assert sum(f"bad signature for cart '{honest_cart}'" in r for r in reasons) == 1
        assert sum("key 'k0' is revoked" in r for r in reasons) == 1
        with make_engine(pg_url).connect() as conn:
            spoofed = conn.execute(
                text("SELECT count(*) FROM anomalies WHERE kind = 'SPOOFED_EVENT'")
            ).scalar_one()
            rogue_sessions = conn.execute(
                text("SELECT count(*) FROM anomalies WHERE session_id LIKE 'rogue-session-%'")
            ).scalar_one()
        assert spoofed == len(attacks)
        assert rogue_sessions == 0  # no refused record reached a stage
        assert len(repo.checkouts(sessions)) == len(sessions)  # and no checkout changed
        log = (tmp_path / "w.log").read_text()
        for secret in (OLD, CURRENT, NEXT):
            assert secret not in log
    finally:
        worker.stop()
