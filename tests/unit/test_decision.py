"""Staff decisions on a checkout (models/decision.py): what each action leaves the shopper
paying, and what the audit record says changed."""

from __future__ import annotations

from typing import Any

import pytest

from cartstream.models.catalog import Catalog
from cartstream.models.decision import DecisionError, decide
from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import CHECKOUT_DECISION, CheckoutItem

CHECKOUT = {
    "checkout_id": "c-1",
    "session_id": "s-1",
    "cart_id": "cart-1",
    "store_id": "store-001",
    "currency": "USD",
}


def packaged(catalog: Catalog, n: int = 0) -> str:
    return [s.sku for s in catalog.skus if not s.sold_by_weight][n]


def by_weight(catalog: Catalog) -> str:
    return next(s.sku for s in catalog.skus if s.sold_by_weight)


def line(catalog: Catalog, sku: str, quantity: int, grams: float | None = None) -> CheckoutItem:
    item = catalog[sku]
    grams = grams if grams is not None else item.unit_grams * quantity
    return {
        "sku": sku,
        "name": item.name,
        "quantity": quantity,
        "unit_price_cents": item.price_cents,
        "grams": grams,
        "sold_by_weight": item.sold_by_weight,
        "line_total_cents": item.price_for(quantity, grams),
    }


def make(catalog: Catalog, items: list[CheckoutItem], action: Any, **kw: Any) -> Any:
    return decide(
        CHECKOUT,
        items,
        action,
        decision_id="d-1",
        staff="alice",
        decided_ms=1_700_000_000_000,
        previous_status="NEEDS_REVIEW",
        catalog=catalog,
        **kw,
    )


def test_approve_keeps_the_items_and_changes_nothing(catalog: Catalog) -> None:
    items = [line(catalog, packaged(catalog), 2)]
    d = make(catalog, items, "APPROVE")
    assert d["final_status"] == "APPROVED" and d["items"] == items and d["changes"] == []
    assert d["subtotal_cents"] == items[0]["line_total_cents"]
    AvroCodec().encode(CHECKOUT_DECISION, d)  # fits the published schema


def test_reject_leaves_nothing_to_pay_and_lists_every_line_as_changed(catalog: Catalog) -> None:
    a, b = packaged(catalog, 0), packaged(catalog, 1)
    d = make(catalog, [line(catalog, a, 2), line(catalog, b, 1)], "REJECT")
    assert d["final_status"] == "REJECTED" and d["items"] == [] and d["subtotal_cents"] == 0
    assert d["changes"] == sorted(
        [
            {"sku": a, "quantity_before": 2, "quantity_after": 0},
            {"sku": b, "quantity_before": 1, "quantity_after": 0},
        ],
        key=lambda c: c["sku"],
    )


def test_a_correction_prices_from_the_catalog_and_records_what_changed(catalog: Catalog) -> None:
    a, b, added = packaged(catalog, 0), packaged(catalog, 1), packaged(catalog, 2)
    items = [line(catalog, a, 2), line(catalog, b, 1)]
    d = make(catalog, items, "CORRECT", quantities={a: 1, b: 0, added: 3}, note=" found it ")
    assert {i["sku"]: i["quantity"] for i in d["items"]} == {a: 1, added: 3}
    assert d["subtotal_cents"] == catalog[a].price_cents + 3 * catalog[added].price_cents
    assert d["item_count"] == 4 and d["note"] == "found it"
    assert [(c["sku"], c["quantity_before"], c["quantity_after"]) for c in d["changes"]] == sorted(
        [(a, 2, 1), (b, 1, 0), (added, 0, 3)]
    )
    AvroCodec().encode(CHECKOUT_DECISION, d)


def test_a_bag_sold_by_weight_keeps_its_measured_grams_per_bag(catalog: Catalog) -> None:
    sku = by_weight(catalog)
    d = make(catalog, [line(catalog, sku, 2, grams=900.0)], "CORRECT", quantities={sku: 3})
    assert d["items"][0]["grams"] == 1350.0
    assert d["items"][0]["line_total_cents"] == catalog[sku].price_for(3, 1350.0)


@pytest.mark.parametrize(
    ("quantities", "message"),
    [({"NOT-A-SKU": 1}, "unknown SKU"), ({"@": -1}, "must be 0..999"), ({}, "needs the corrected")],
)
def test_an_impossible_correction_is_refused_with_the_reason(
    catalog: Catalog, quantities: dict[str, int], message: str
) -> None:
    quantities = {(packaged(catalog) if k == "@" else k): v for k, v in quantities.items()}
    with pytest.raises(DecisionError, match=message):
        make(catalog, [line(catalog, packaged(catalog), 1)], "CORRECT", quantities=quantities)
