from __future__ import annotations

from typing import Any

import pytest

from cartstream.services.storage.migrate import current
from cartstream.services.storage.repository import Repository, make_engine
from cartstream.streams.reconcile import checkout_id_for


def checkout(session: str, anomalies: list[str] | None = None) -> Any:
    return {
        "checkout_id": checkout_id_for(session),
        "cart_id": "cart-1",
        "store_id": "store-1",
        "session_id": session,
        "requested_ms": 1_700_000_000_000,
        "decided_ms": 1_700_000_001_000,
        "currency": "USD",
        "items": [
            {
                "sku": "PAN-TUNA-160",
                "name": "Ocean Tuna 160 g",
                "quantity": 2,
                "unit_price_cents": 179,
                "grams": 370.0,
                "sold_by_weight": False,
                "line_total_cents": 358,
            },
            {
                "sku": "PRD-APPLE",
                "name": "Red Apples (per kg)",
                "quantity": 1,
                "unit_price_cents": 399,
                "grams": 812.0,
                "sold_by_weight": True,
                "line_total_cents": 324,
            },
        ],
        "item_count": 3,
        "subtotal_cents": 682,
        "measured_grams": 1183.0,
        "expected_grams": 1182.0,
        "tolerance_grams": 20.0,
        "status": "NEEDS_REVIEW" if anomalies else "APPROVED",
        "review_reasons": ["anomaly: x"] if anomalies else [],
        "anomaly_ids": anomalies or [],
        "reasoning": "weight",
    }


def anomaly(anomaly_id: str, session: str) -> Any:
    return {
        "anomaly_id": anomaly_id,
        "kind": "UNEXPLAINED_WEIGHT_CHANGE",
        "severity": "WARNING",
        "cart_id": "cart-1",
        "store_id": "store-1",
        "session_id": session,
        "detected_ms": 1_700_000_000_500,
        "description": "7777 g added",
        "basket_change_ids": ["bc-1"],
        "frame_event_ids": [],
        "weight_from_ms": 1,
        "weight_to_ms": 2,
        "grams_measured": 7777.0,
        "grams_expected": None,
    }


@pytest.fixture(scope="module")
def repo(pg_url: str) -> Repository:
    return Repository(make_engine(pg_url))


def test_migrated_to_head(pg_url: str) -> None:
    from alembic.script import ScriptDirectory

    from cartstream.services.storage.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == "0002" and current(pg_url) == head


def test_checkout_writes_are_idempotent(repo: Repository) -> None:
    before = repo.count_checkouts()
    assert repo.save_checkout(checkout("sess-a")) is True
    assert repo.save_checkout(checkout("sess-a")) is False  # re-delivery
    assert repo.count_checkouts() == before + 1
    assert repo.basket_of("sess-a") == {"PAN-TUNA-160": 2, "PRD-APPLE": 1}


def test_anomalies_and_links(repo: Repository) -> None:
    a_id = "0b6f7b5e-0000-5000-8000-000000000001"
    assert repo.save_checkout(checkout("sess-b", [a_id])) is True
    assert repo.save_anomaly(anomaly(a_id, "sess-b")) is True  # after its checkout: fine
    assert repo.save_anomaly(anomaly(a_id, "sess-b")) is False
    assert repo.anomaly_links(checkout_id_for("sess-b")) == [a_id]
    assert repo.anomalies_by_kind()["UNEXPLAINED_WEIGHT_CHANGE"] >= 1


def test_a_row_postgres_refuses_is_dead_lettered_after_the_window_not_crash_looped(
    repo: Repository,
) -> None:
    """Issue 38: a SPOOFED_EVENT alert whose cart id held a NUL byte; Postgres refused the row
    (`DataError`), the persist agent crashed 94 times in one run and a checkout behind it never
    reached its table. The refusal is not an outage: retried for the window, then dead-lettered
    with its reason, and the records after it are written."""
    import asyncio

    from sqlalchemy.exc import DataError

    from cartstream.core.settings import Settings
    from cartstream.exceptions import StoreUnavailable
    from cartstream.streams.persist import PersistSink
    from cartstream.streams.stage import Inbound
    from tests.unit.test_persist_sink import FakeApp, Letters

    hostile = {**anomaly("nul-1", "s-nul"), "cart_id": "cart\x00evil"}
    with pytest.raises(DataError) as refused:  # a refusal, not StoreUnavailable
        repo.save_anomaly(hostile)
    assert not isinstance(refused.value, StoreUnavailable)

    from cartstream.streams import sink_runner

    settings = Settings()
    letters = Letters()
    runner = sink_runner.SinkRunner(FakeApp(), PersistSink(settings, repo), settings, letters)  # type: ignore[arg-type]
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    runner.sleep = sleep  # type: ignore[method-assign]
    runner.clock = lambda: clock[0]
    inbound = Inbound(settings.topics.anomalies, 1, 7, b"cart\x00evil", 0)
    asyncio.run(runner._apply(hostile, inbound, 0, b"raw"))
    (letter,) = letters.sent
    assert letter.record["error_type"] == "REFUSED" and "NUL" in letter.record["reason"]
    fine = checkout("s-after-nul")
    asyncio.run(runner._apply(fine, Inbound(settings.topics.checkouts, 1, 8, b"c", 0), 0, b""))
    assert repo.basket_of("s-after-nul") is not None
