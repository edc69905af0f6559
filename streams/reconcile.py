"""Reconcile: the basket per session, and at checkout the retailer-facing Checkout record.

Inputs `basket.changes` and `basket.reviews` (co-partitioned by cart). Changes apply once, in
order (per-session `seq`). A checkout is published when both the session's checkout marker and the
anomaly stage's review have arrived (or `review_wait_s` after the marker, flagged). Its id
derives from the session, so a re-delivery or a restart can only re-publish the same checkout,
which every consumer (and Postgres) dedupes on `checkout_id`.

Decision: NEEDS_REVIEW when measured and expected grams differ by more than the tolerance, when
the review names anomalies, or when the weight stream was incomplete; APPROVED otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from cartstream.core.ids import derived_id
from cartstream.core.settings import Settings
from cartstream.models.basket import Basket
from cartstream.models.catalog import Catalog
from cartstream.schemas.records import (
    BASKET_CHANGE,
    CHECKOUT,
    SESSION_REVIEW,
    BasketChange,
    Checkout,
    CheckoutItem,
    SessionReview,
)
from cartstream.streams.stage import Inbound, Outbound, Result, State, accept_in_order

log = logging.getLogger(__name__)

STATE_RETENTION_MS = 6 * 3600 * 1000


def checkout_id_for(session_id: str) -> str:
    return str(derived_id("checkout", session_id))


def build_checkout(
    catalog: Catalog,
    basket: Basket,
    marker: Mapping[str, Any],
    review: Mapping[str, Any] | None,
    now_ms: int,
) -> Checkout:
    """The checkout for a closed session (pure: same inputs, same record but for decided_ms)."""
    items: list[CheckoutItem] = []
    for sku, quantity in sorted(basket.units.items()):
        item = catalog[sku]
        items.append(
            {
                "sku": sku,
                "name": item.name,
                "quantity": quantity,
                "unit_price_cents": item.price_cents,
                "grams": round(item.unit_grams * quantity, 1),
                "sold_by_weight": False,
                "line_total_cents": item.price_for(quantity, 0.0),
            }
        )
    for sku, bags in sorted(basket.bags.items()):
        item, grams = catalog[sku], round(sum(bags), 1)
        items.append(
            {
                "sku": sku,
                "name": item.name,
                "quantity": len(bags),
                "unit_price_cents": item.price_cents,
                "grams": grams,
                "sold_by_weight": True,
                "line_total_cents": item.price_for(len(bags), grams),
            }
        )
    expected = basket.expected_grams(catalog)
    tolerance = basket.tolerance_grams(catalog)
    measured = float(marker["scale_net_grams"])
    reasons: list[str] = []
    if abs(measured - expected) > tolerance:
        reasons.append(
            f"weight mismatch: scale {measured:.0f} g, expected {expected:.0f} g "
            f"(tolerance {tolerance:.0f} g)"
        )
    if marker.get("incomplete"):
        reasons.append("weight stream incomplete: some packets never arrived")
    if review is None:
        reasons.append("anomaly review not received in time")
    else:
        reasons += [f"anomaly: {r}" for r in review["reasons"] if not r.startswith("scale reads")]
    anomaly_ids = list(review["anomaly_ids"]) if review else []
    return {
        "checkout_id": checkout_id_for(str(marker["session_id"])),
        "cart_id": str(marker["cart_id"]),
        "store_id": str(marker["store_id"]),
        "session_id": str(marker["session_id"]),
        "requested_ms": int(marker["step_end_ms"]),
        "decided_ms": now_ms,
        "currency": catalog.currency,
        "items": items,
        "item_count": sum(i["quantity"] for i in items),
        "subtotal_cents": sum(i["line_total_cents"] for i in items),
        "measured_grams": round(measured, 1),
        "expected_grams": round(expected, 1),
        "tolerance_grams": round(tolerance, 1),
        "status": "NEEDS_REVIEW" if reasons or anomaly_ids else "APPROVED",
        "review_reasons": reasons,
        "anomaly_ids": anomaly_ids,
        "reasoning": str(marker.get("evidence", "weight")),
    }


class ReconcileStage:
    stateful = True
    name = "reconcile"

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.topics = settings.topics
        self.catalog = catalog
        self.review_wait_ms = int(settings.review_wait_s * 1000)

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def inputs(self) -> Mapping[str, str]:
        return {self.topics.basket_changes: BASKET_CHANGE, self.topics.reviews: SESSION_REVIEW}

    def validate(self, record: Mapping[str, Any], inbound: Inbound, now_ms: int) -> None:
        return None

    def state_key(self, record: Mapping[str, Any]) -> str:
        return str(record["session_id"])

    def handle(
        self, state: State | None, record: Mapping[str, Any], inbound: Inbound, now_ms: int
    ) -> Result:
        if state is None:
            state = {
                "cart_id": record["cart_id"],
                "store_id": record["store_id"],
                "session_id": record["session_id"],
                "next_seq": 0,
                "basket": Basket().to_dict(),
                "marker": None,
                "review": None,
                "closed_ms": None,
                "traces": [],  # trace contexts of every change and the review (checkout links)
            }
        if state["closed_ms"] is not None:
            return Result(state)
        traces = state.setdefault("traces", [])  # a state from before traces were kept
        if inbound.topic == self.topics.reviews:
            if state["review"] is None:
                if inbound.traceparent:
                    traces.append(inbound.traceparent.decode())
                review = cast(SessionReview, record)
                state["review"] = {
                    "anomaly_ids": review["anomaly_ids"],
                    "reasons": review["reasons"],
                }
        else:
            change = cast(BasketChange, record)
            if not accept_in_order(state, change["seq"]):
                return Result(state)
            if inbound.traceparent:
                traces.append(inbound.traceparent.decode())
            self._apply(state, change, inbound, now_ms)
        return Result(state, self._maybe_checkout(state, now_ms, timed_out=False))

    def _apply(self, state: State, change: BasketChange, inbound: Inbound, now_ms: int) -> None:
        action, sku = change["action"], change["sku"]
        if action in ("ADD", "REMOVE") and sku is not None and sku in self.catalog:
            basket = Basket.from_dict(state["basket"])
            if action == "ADD":
                basket.add(self.catalog, sku, change["quantity"], change["grams_delta"])
            elif not basket.remove(self.catalog, sku, change["quantity"], change["grams_delta"]):
                log.warning("session %s: removal of %s not in basket", change["session_id"], sku)
            state["basket"] = basket.to_dict()
        elif action in ("CHECKOUT_REQUESTED", "ABANDONED"):
            state["marker"] = {
                **{
                    k: change[k]
                    for k in (
                        "cart_id",
                        "store_id",
                        "session_id",
                        "step_end_ms",
                        "scale_net_grams",
                        "incomplete",
                        "evidence",
                    )
                },
                "action": action,
                "received_ms": now_ms,
                "traceparent": (inbound.traceparent or b"").decode(),
            }

    def _maybe_checkout(self, state: State, now_ms: int, timed_out: bool) -> list[Outbound]:
        marker = state["marker"]
        if marker is None:
            return []
        if marker["action"] == "ABANDONED":
            state["closed_ms"] = now_ms
            return []
        if state["review"] is None and not timed_out:
            return []
        checkout = build_checkout(
            self.catalog, Basket.from_dict(state["basket"]), marker, state["review"], now_ms
        )
        state["closed_ms"] = now_ms
        trace = marker["traceparent"].encode() or None
        links = tuple(t.encode() for t in state.get("traces", []) if t != marker["traceparent"])
        return [Outbound(self.topics.checkouts, state["cart_id"], CHECKOUT, checkout, trace, links)]

    def needs_tick(self, state: State, now_ms: int) -> bool:
        if state.get("closed_ms") is not None:
            return bool(now_ms - state["closed_ms"] >= STATE_RETENTION_MS)
        marker = state.get("marker")
        return marker is not None and now_ms - marker["received_ms"] >= self.review_wait_ms

    def tick(self, state: State, now_ms: int) -> Result:
        if state.get("closed_ms") is not None:
            return Result(None if self.needs_tick(state, now_ms) else state)
        if self.needs_tick(state, now_ms):
            log.warning(
                "session %s: no anomaly review after %.0f s; checkout needs review",
                state["session_id"],
                self.review_wait_ms / 1000,
            )
            return Result(state, self._maybe_checkout(state, now_ms, timed_out=True))
        return Result(state)
