"""A store employee's decision on a checkout: approve it, correct its items, or reject it.

Pure: given the checkout as persisted and what the employee chose, `decide` builds the
`CheckoutDecision` record the console publishes (`checkout.decisions`) and persist appends to
the checkout's audit trail. Invariants:
- APPROVE keeps the checkout's items; REJECT leaves none (nothing is sold); CORRECT prices the
  corrected quantities from the catalog, a packaged line by units, a line sold by weight by its
  bags at the line's measured grams per bag (a bag added by hand weighs the catalog's mean);
- `changes` lists exactly the SKUs whose quantity differs from the checkout's, sorted by SKU;
- the same inputs give the same record (the decision id is made when the form is shown).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cartstream.exceptions import CartstreamError
from cartstream.models.catalog import Catalog
from cartstream.schemas.records import (
    CheckoutDecision,
    CheckoutItem,
    DecisionAction,
    FinalStatus,
    QuantityChange,
)

FINAL_STATUS: dict[DecisionAction, FinalStatus] = {
    "APPROVE": "APPROVED",
    "CORRECT": "CORRECTED",
    "REJECT": "REJECTED",
}
MAX_QUANTITY = 999


class DecisionError(CartstreamError):
    """A decision that cannot be made as asked (an unknown SKU, a negative quantity, ...)."""


def decide(
    checkout: Mapping[str, object],
    items: Sequence[CheckoutItem],
    action: DecisionAction,
    *,
    decision_id: str,
    staff: str,
    decided_ms: int,
    previous_status: str,
    catalog: Catalog,
    quantities: Mapping[str, int] | None = None,
    note: str = "",
) -> CheckoutDecision:
    """`checkout`: its ids, store and currency; `items`: its lines now (as persisted, or as the
    latest decision left them: approving a corrected checkout keeps the correction); `quantities`:
    SKU -> units (bags) after the correction, for CORRECT (a SKU left out keeps its quantity;
    0 removes the line)."""
    if action not in FINAL_STATUS:
        raise DecisionError(f"unknown action {action!r}: choose APPROVE, CORRECT or REJECT")
    before = {i["sku"]: i["quantity"] for i in items}
    final: list[CheckoutItem]
    if action == "APPROVE":
        final = [_line(i) for i in items]
    elif action == "REJECT":
        final = []
    else:
        if not quantities:
            raise DecisionError("a correction needs the corrected quantities")
        final = _corrected(items, before, quantities, catalog)
    after = {i["sku"]: i["quantity"] for i in final}
    changes: list[QuantityChange] = [
        {"sku": sku, "quantity_before": before.get(sku, 0), "quantity_after": after.get(sku, 0)}
        for sku in sorted(set(before) | set(after))
        if before.get(sku, 0) != after.get(sku, 0)
    ]
    return {
        "decision_id": decision_id,
        "checkout_id": str(checkout["checkout_id"]),
        "session_id": str(checkout["session_id"]),
        "cart_id": str(checkout["cart_id"]),
        "store_id": str(checkout["store_id"]),
        "action": action,
        "final_status": FINAL_STATUS[action],
        "staff": staff,
        "decided_ms": decided_ms,
        "previous_status": previous_status,
        "items": final,
        "item_count": sum(i["quantity"] for i in final),
        "subtotal_cents": sum(i["line_total_cents"] for i in final),
        "currency": str(checkout["currency"]),
        "changes": changes,
        "note": note.strip()[:2000],
    }


def _corrected(
    items: Sequence[CheckoutItem],
    before: Mapping[str, int],
    quantities: Mapping[str, int],
    catalog: Catalog,
) -> list[CheckoutItem]:
    for sku, quantity in quantities.items():
        if sku not in catalog:
            raise DecisionError(f"unknown SKU {sku!r}: not in catalog {catalog.version}")
        if not 0 <= quantity <= MAX_QUANTITY:
            raise DecisionError(f"quantity of {sku} must be 0..{MAX_QUANTITY}, not {quantity}")
    existing = {i["sku"]: i for i in items}
    final: list[CheckoutItem] = []
    for sku in sorted(set(before) | set(quantities)):
        quantity = quantities.get(sku, before.get(sku, 0))
        if quantity == 0:
            continue
        item = catalog[sku]
        old = existing.get(sku)
        if item.sold_by_weight:
            per_bag = old["grams"] / old["quantity"] if old else item.unit_grams
            grams = round(per_bag * quantity, 1)
        else:
            grams = round(item.unit_grams * quantity, 1)
        final.append(
            {
                "sku": sku,
                "name": item.name,
                "quantity": quantity,
                "unit_price_cents": item.price_cents,
                "grams": grams,
                "sold_by_weight": item.sold_by_weight,
                "line_total_cents": item.price_for(quantity, grams),
            }
        )
    return final


def _line(item: Mapping[str, object]) -> CheckoutItem:
    return {
        "sku": str(item["sku"]),
        "name": str(item["name"]),
        "quantity": int(item["quantity"]),  # type: ignore[call-overload]
        "unit_price_cents": int(item["unit_price_cents"]),  # type: ignore[call-overload]
        "grams": float(item["grams"]),  # type: ignore[arg-type]
        "sold_by_weight": bool(item["sold_by_weight"]),
        "line_total_cents": int(item["line_total_cents"]),  # type: ignore[call-overload]
    }
