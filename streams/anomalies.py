"""Anomalies: typed loss-prevention alerts from the basket-change stream, and a review per session.

Input `basket.changes`. Raises
- UNEXPLAINED_WEIGHT_CHANGE for a settled step that no catalog item (or basket item) explains;
- CHECKOUT_WEIGHT_MISMATCH when, at checkout, the scale's reading and the basket's expected
  weight differ by more than the basket's tolerance.
At a session's checkout marker it publishes a SessionReview (all anomaly ids and reasons) on
`basket.reviews`, which reconcile joins into the checkout. Anomaly ids derive from the evidence,
so re-processing re-publishes the same alerts, never new ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from cartstream.models.basket import Basket
from cartstream.models.catalog import Catalog
from cartstream.schemas.records import (
    ANOMALY,
    BASKET_CHANGE,
    SESSION_REVIEW,
    Anomaly,
    AnomalyKind,
    BasketChange,
    SessionReview,
    Severity,
)
from cartstream.services.settings import Settings
from cartstream.streams.stage import Inbound, Outbound, Result, State, accept_in_order, derived_id

STATE_RETENTION_MS = 6 * 3600 * 1000


def anomaly(
    kind: AnomalyKind,
    severity: Severity,
    change: BasketChange,
    now_ms: int,
    description: str,
    *,
    measured: float | None = None,
    expected: float | None = None,
) -> Anomaly:
    return {
        "anomaly_id": derived_id("anomaly", kind, change["event_id"]),
        "kind": kind,
        "severity": severity,
        "cart_id": change["cart_id"],
        "store_id": change["store_id"],
        "session_id": change["session_id"],
        "detected_ms": now_ms,
        "description": description,
        "basket_change_ids": [change["event_id"]],
        "frame_event_ids": [],
        "weight_from_ms": change["step_start_ms"],
        "weight_to_ms": change["step_end_ms"],
        "grams_measured": measured,
        "grams_expected": expected,
    }


class AnomalyStage:
    stateful = True
    name = "anomalies"

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.topics = settings.topics
        self.catalog = catalog

    def inputs(self) -> Mapping[str, str]:
        return {self.topics.basket_changes: BASKET_CHANGE}

    def validate(self, record: Mapping[str, Any], inbound: Inbound, now_ms: int) -> None:
        return None  # produced by the reason stage with the same schema; decoding suffices

    def state_key(self, record: Mapping[str, Any]) -> str:
        return str(record["session_id"])

    def handle(
        self, state: State | None, record: Mapping[str, Any], inbound: Inbound, now_ms: int
    ) -> Result:
        change = cast(BasketChange, record)
        if state is None:
            state = {
                "cart_id": change["cart_id"],
                "store_id": change["store_id"],
                "session_id": change["session_id"],
                "next_seq": 0,
                "basket": Basket().to_dict(),
                "anomaly_ids": [],
                "reasons": [],
                "closed_ms": None,
            }
        if state["closed_ms"] is not None or not accept_in_order(state, change["seq"]):
            return Result(state)
        basket = Basket.from_dict(state["basket"])
        found: list[Anomaly] = []
        action, sku = change["action"], change["sku"]
        if action == "ADD" and sku is not None and sku in self.catalog:
            basket.add(self.catalog, sku, change["quantity"], change["grams_delta"])
        elif action == "REMOVE" and sku is not None and sku in self.catalog:
            basket.remove(self.catalog, sku, change["quantity"], change["grams_delta"])
        elif action == "UNKNOWN":
            direction = "added" if change["grams_delta"] > 0 else "removed"
            found.append(
                anomaly(
                    "UNEXPLAINED_WEIGHT_CHANGE",
                    "WARNING",
                    change,
                    now_ms,
                    f"{abs(change['grams_delta']):.0f} g {direction} that no catalog item explains",
                    measured=change["grams_delta"],
                )
            )
        outputs = [Outbound(self.topics.anomalies, change["cart_id"], ANOMALY, a) for a in found]
        state["anomaly_ids"] += [a["anomaly_id"] for a in found]
        state["reasons"] += [a["description"] for a in found]
        if action == "CHECKOUT_REQUESTED":
            mismatch = self._weight_check(basket, change, now_ms)
            if mismatch is not None:
                outputs.append(
                    Outbound(self.topics.anomalies, change["cart_id"], ANOMALY, mismatch)
                )
                state["anomaly_ids"].append(mismatch["anomaly_id"])
                state["reasons"].append(mismatch["description"])
            outputs.append(self._review(state, change, now_ms))
        if action in ("CHECKOUT_REQUESTED", "ABANDONED"):
            state["closed_ms"] = now_ms
        state["basket"] = basket.to_dict()
        return Result(state, outputs)

    def _weight_check(self, basket: Basket, change: BasketChange, now_ms: int) -> Anomaly | None:
        expected = basket.expected_grams(self.catalog)
        tolerance = basket.tolerance_grams(self.catalog)
        measured = change["scale_net_grams"]
        diff = measured - expected
        if abs(diff) <= tolerance:
            return None
        severity: Severity = "CRITICAL" if abs(diff) > 3 * tolerance else "WARNING"
        return anomaly(
            "CHECKOUT_WEIGHT_MISMATCH",
            severity,
            change,
            now_ms,
            f"scale reads {measured:.0f} g, basket should weigh {expected:.0f} g "
            f"({diff:+.0f} g, tolerance {tolerance:.0f} g)",
            measured=measured,
            expected=expected,
        )

    def _review(self, state: State, change: BasketChange, now_ms: int) -> Outbound:
        review: SessionReview = {
            "event_id": derived_id("review", change["session_id"]),
            "cart_id": change["cart_id"],
            "store_id": change["store_id"],
            "session_id": change["session_id"],
            "anomaly_ids": list(state["anomaly_ids"]),
            "reasons": list(state["reasons"]),
            "reviewed_ms": now_ms,
        }
        return Outbound(self.topics.reviews, change["cart_id"], SESSION_REVIEW, review)

    def needs_tick(self, state: State, now_ms: int) -> bool:
        closed = state.get("closed_ms")
        return closed is not None and now_ms - closed >= STATE_RETENTION_MS

    def tick(self, state: State, now_ms: int) -> Result:
        return Result(None if self.needs_tick(state, now_ms) else state)
