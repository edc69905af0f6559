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
