"""Reconcile: the basket per session, and at checkout the retailer-facing Checkout record.

Inputs `basket.changes` and `basket.reviews` (co-partitioned by cart). Changes apply once, in
order (per-session `seq`). A checkout is published when both the session's checkout marker and the
anomaly stage's review have arrived (or `review_wait_s` after the marker, flagged). Its id
derives from the session, so a re-delivery or a restart can only re-publish the same checkout,
which every consumer (and Postgres) dedupes on `checkout_id`.

Decision: NEEDS_REVIEW when the review names anomalies (the checkout weight check among them),
when the weight stream was incomplete, or when the review never came; APPROVED otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    ClosingAction,
    SessionReview,
)
from cartstream.streams.stage import (
    STATE_RETENTION_MS,
    Inbound,
    Outbound,
    Result,
    accept_in_order,
)
from cartstream.streams.state import StateCodec

log = logging.getLogger(__name__)


@dataclass
class Marker:
    """A session's closing marker (checkout request or abandonment), as reconcile keeps it."""

    cart_id: str
    store_id: str
    session_id: str
    action: ClosingAction
    step_end_ms: int  # when the shopper asked
    scale_net_grams: float
    incomplete: bool  # some weight packets never came
    evidence: str  # the reasoning mode
    received_ms: int
    traceparent: str


@dataclass
class Review:
    """The anomaly stage's verdict on a session."""

    anomaly_ids: list[str]
    reasons: list[str]


@dataclass
class ChangeNote:
    """One applied basket change as the live basket shows it (the cart screen, the console)."""

    seq: int
    event_id: str
    action: str
    sku: str
    quantity: int
    confidence: float
    step_end_ms: int


@dataclass
class ReconcileState:
    """Version 0 (before versions) may lack `traces` (before tracing), version 1 `changes`
    (before the live basket): the defaults fill them in."""

    cart_id: str
    store_id: str
    session_id: str
    next_seq: int = 0
    basket: Basket = field(default_factory=Basket)
    marker: Marker | None = None
    review: Review | None = None
    closed_ms: int | None = None
    traces: list[str] = field(default_factory=list)  # every change's and the review's contexts
    changes: list[ChangeNote] = field(default_factory=list)  # the applied changes, in order
    version: int = 2


CODEC = StateCodec(ReconcileState, 2)


def checkout_id_for(session_id: str) -> str:
    return str(derived_id("checkout", session_id))


def checkout_lines(catalog: Catalog, basket: Basket) -> list[CheckoutItem]:
    """The checkout's lines: packaged SKUs by units, then items sold by weight by their bags."""
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
    return items


def build_checkout(
    catalog: Catalog,
    basket: Basket,
    marker: Marker,
    review: Review | None,
    now_ms: int,
) -> Checkout:
    """The checkout for a closed session (pure: same inputs, same record but for decided_ms).

    NEEDS_REVIEW when the review names anomalies (the checkout weight check is one of them:
    `Basket.check_weight`, run by the anomaly stage), when the weight stream was incomplete, or
    when the review never came (then the weight check is run here, so it is never skipped)."""
    items = checkout_lines(catalog, basket)
    check = basket.check_weight(catalog, marker.scale_net_grams)
    reasons: list[str] = []
    if marker.incomplete:
        reasons.append("weight stream incomplete: some packets never arrived")
    if review is None:
        reasons.append("anomaly review not received in time")
        if not check.within:
            reasons.append(
                f"weight mismatch: scale {check.measured:.0f} g, expected {check.expected:.0f} g "
                f"(tolerance {check.tolerance:.0f} g)"
            )
    else:
        reasons += [f"anomaly: {r}" for r in review.reasons]
    anomaly_ids = list(review.anomaly_ids) if review else []
    measured, expected, tolerance = check.measured, check.expected, check.tolerance
    return {
        "checkout_id": checkout_id_for(marker.session_id),
        "cart_id": marker.cart_id,
        "store_id": marker.store_id,
        "session_id": marker.session_id,
        "requested_ms": marker.step_end_ms,
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
        "reasoning": marker.evidence,
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

    def load_state(self, data: Mapping[str, Any]) -> ReconcileState:
        return CODEC.load(data)

    def dump_state(self, state: ReconcileState) -> dict[str, Any]:
        return CODEC.dump(state)

    def handle(
        self,
        state: ReconcileState | None,
        record: Mapping[str, Any],
        inbound: Inbound,
        now_ms: int,
    ) -> Result[ReconcileState]:
        if state is None:
            state = ReconcileState(
                str(record["cart_id"]), str(record["store_id"]), str(record["session_id"])
            )
        if state.closed_ms is not None:
            return Result(state)
        if inbound.topic == self.topics.reviews:
            if state.review is None:
                if inbound.traceparent:
                    state.traces.append(inbound.traceparent.decode())
                review = cast(SessionReview, record)
                state.review = Review(list(review["anomaly_ids"]), list(review["reasons"]))
        else:
            change = cast(BasketChange, record)
            if not accept_in_order(state, change["seq"]):
                return Result(state)
            if inbound.traceparent:
                state.traces.append(inbound.traceparent.decode())
            self._apply(state, change, inbound, now_ms)
        return Result(state, self._maybe_checkout(state, now_ms, timed_out=False))

    def _apply(
        self, state: ReconcileState, change: BasketChange, inbound: Inbound, now_ms: int
    ) -> None:
        action, sku = change["action"], change["sku"]
        applied = state.basket.apply(
            self.catalog, action, sku, change["quantity"], change["grams_delta"]
        )
        if action == "REMOVE" and sku in self.catalog and not applied:
            log.warning("session %s: removal of %s not in basket", change["session_id"], sku)
        state.changes.append(
            ChangeNote(
                seq=change["seq"],
                event_id=change["event_id"],
                action=action,
                sku=sku or "",
                quantity=change["quantity"],
                confidence=round(change["confidence"], 4),
                step_end_ms=change["step_end_ms"],
            )
        )
        if action == "CHECKOUT_REQUESTED" or action == "ABANDONED":
            state.marker = Marker(
                cart_id=change["cart_id"],
                store_id=change["store_id"],
                session_id=change["session_id"],
                action=action,
                step_end_ms=change["step_end_ms"],
                scale_net_grams=change["scale_net_grams"],
                incomplete=change["incomplete"],
                evidence=change["evidence"],
                received_ms=now_ms,
                traceparent=(inbound.traceparent or b"").decode(),
            )

    def _maybe_checkout(
        self, state: ReconcileState, now_ms: int, timed_out: bool
    ) -> list[Outbound]:
        marker = state.marker
        if marker is None:
            return []
        if marker.action == "ABANDONED":
            state.closed_ms = now_ms
            return []
        if state.review is None and not timed_out:
            return []
        checkout = build_checkout(self.catalog, state.basket, marker, state.review, now_ms)
        state.closed_ms = now_ms
        trace = marker.traceparent.encode() or None
        links = tuple(t.encode() for t in state.traces if t != marker.traceparent)
        return [Outbound(self.topics.checkouts, state.cart_id, CHECKOUT, checkout, trace, links)]

    def upstream(self) -> dict[str, str]:
        """The anomaly stage turns basket changes into the reviews a checkout waits for: the
        review deadline fires only once it has processed them (streams/upstream.py)."""
        return {self.topics.basket_changes: "anomalies"}

    def needs_tick(self, state: ReconcileState, now_ms: int) -> bool:
        if state.closed_ms is not None:
            return now_ms - state.closed_ms >= STATE_RETENTION_MS
        marker = state.marker
        return marker is not None and now_ms - marker.received_ms >= self.review_wait_ms

    def tick(self, state: ReconcileState, now_ms: int) -> Result[ReconcileState]:
        if state.closed_ms is not None:
            return Result(None if self.needs_tick(state, now_ms) else state)
        if self.needs_tick(state, now_ms):
            log.warning(
                "session %s: no anomaly review after %.0f s; checkout needs review",
                state.session_id,
                self.review_wait_ms / 1000,
            )
            return Result(state, self._maybe_checkout(state, now_ms, timed_out=True))
        return Result(state)
