"""Anomalies: typed loss-prevention alerts from the basket-change stream, and a review per session.

Input `basket.changes`; each step carries what the cameras and the weight said on their own
(basket_change v2). Raises
- CAMERA_BLOCKED once per camera and session when a camera gave no usable frame (missing, dark,
  uniform) around a weight change;
- UNRECOGNIZED_ITEM when the weight rose and no camera saw an item in hand (hidden), or the hand
  held something no catalog item explains;
- REMOVAL_UNSEEN when the weight fell and no removal was seen;
- SCALE_TAMPER when an unseen change is undone by an unseen change of the opposite sign soon
  after (leaning on the basket, lifting it): unseen steps are held until the next change or the
  session's end to tell the two apart;
- ITEM_SWAP when the cameras confidently saw one SKU, no count of it (or of its look-alikes)
  weighs what the step weighed, and the weight fits another catalog SKU;
- UNEXPLAINED_WEIGHT_CHANGE for a step no catalog item explains when reasoning ran by weight
  alone;
- CHECKOUT_WEIGHT_MISMATCH when, at checkout, the scale's reading and the basket's expected
  weight differ by more than the basket's tolerance.
At a session's checkout marker it publishes a SessionReview (all anomaly ids and reasons) on
`basket.reviews`, which reconcile joins into the checkout. Anomaly ids derive from the evidence,
so re-processing re-publishes the same alerts, never new ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from cartstream.core.ids import derived_id
from cartstream.core.settings import Settings
from cartstream.models.basket import Basket
from cartstream.models.catalog import Catalog
from cartstream.schemas.records import (
    ANOMALY,
    BASKET_CHANGE,
    CLOSING_ACTIONS,
    SESSION_REVIEW,
    STEP_ACTIONS,
    Anomaly,
    AnomalyKind,
    BasketChange,
    SessionReview,
    Severity,
)
from cartstream.streams.stage import (
    STATE_RETENTION_MS,
    Inbound,
    Outbound,
    Result,
    accept_in_order,
)
from cartstream.streams.state import StateCodec

TAMPER_WINDOW_MS = 60_000  # an unseen change undone within this long is tampering
TAMPER_MATCH_G = 30.0  # ... when the two changes cancel out to within this (or 5 %)
SWAP_MIN_VISION = 0.9  # how sure the cameras alone must be to call a swap
SWAP_SIGMAS = 5.0  # ... and how far the weight must be from what they saw
SWAP_MIN_FRACTION = 0.1


def anomaly(
    kind: AnomalyKind,
    severity: Severity,
    change: BasketChange,
    now_ms: int,
    description: str,
    *,
    measured: float | None = None,
    expected: float | None = None,
    earlier: BasketChange | None = None,
    key: tuple[str, ...] = (),
) -> Anomaly:
    """An alert about `change` (and `earlier`, when two changes make one case). Its id derives
    from `key`, by default the changes' ids, so re-processing re-raises the same alert."""
    changes = [c for c in (earlier, change) if c is not None]
    ids = [c["event_id"] for c in changes]
    return {
        "anomaly_id": derived_id("anomaly", kind, *(key or ids)),
        "kind": kind,
        "severity": severity,
        "cart_id": change["cart_id"],
        "store_id": change["store_id"],
        "session_id": change["session_id"],
        "detected_ms": now_ms,
        "description": description,
        "basket_change_ids": ids,
        "frame_event_ids": [f for c in changes for f in c["frame_event_ids"]],
        "weight_from_ms": change["step_start_ms"],
        "weight_to_ms": change["step_end_ms"],
        "grams_measured": measured,
        "grams_expected": expected,
    }


@dataclass
class AnomalyState:
    """What the anomaly stage keeps per session. Version 0 (before versions) may lack `held`,
    `blind` and `unknown_g` (before the camera-evidence rules): their defaults fill them in."""

    cart_id: str
    store_id: str
    session_id: str
    next_seq: int = 0
    basket: Basket = field(default_factory=Basket)
    anomaly_ids: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    held: BasketChange | None = None  # an unseen step's change, until we know if it is undone
    blind: list[int] = field(default_factory=list)  # cameras already reported blocked
    unknown_g: float = 0.0  # grams of unexplained steps already raised as alerts
    closed_ms: int | None = None
    version: int = 1


CODEC = StateCodec(AnomalyState, 1)


class AnomalyStage:
    stateful = True
    name = "anomalies"

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.topics = settings.topics
        self.catalog = catalog

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def inputs(self) -> Mapping[str, str]:
        return {self.topics.basket_changes: BASKET_CHANGE}

    def validate(self, record: Mapping[str, Any], inbound: Inbound, now_ms: int) -> None:
        return None  # produced by the reason stage with the same schema; decoding suffices

    def state_key(self, record: Mapping[str, Any]) -> str:
        return str(record["session_id"])

    def load_state(self, data: Mapping[str, Any]) -> AnomalyState:
        return CODEC.load(data)

    def dump_state(self, state: AnomalyState) -> dict[str, Any]:
        return CODEC.dump(state)

    def handle(
        self, state: AnomalyState | None, record: Mapping[str, Any], inbound: Inbound, now_ms: int
    ) -> Result[AnomalyState]:
        change = cast(BasketChange, record)
        if state is None:
            state = AnomalyState(change["cart_id"], change["store_id"], change["session_id"])
        if state.closed_ms is not None or not accept_in_order(state, change["seq"]):
            return Result(state)
        basket = state.basket
        action = change["action"]
        basket.apply(self.catalog, action, change["sku"], change["quantity"], change["grams_delta"])
        if action in STEP_ACTIONS:
            found = self._step_alerts(state, change, now_ms)
            if action == "UNKNOWN" and self._flagged(state, change, found):
                state.unknown_g += change["grams_delta"]
        else:  # the session's end: nothing more can undo a held step
            found = self._flush(state, now_ms)
        outputs = [Outbound(self.topics.anomalies, change["cart_id"], ANOMALY, a) for a in found]
        state.anomaly_ids += [a["anomaly_id"] for a in found]
        state.reasons += [a["description"] for a in found]
        if action == "CHECKOUT_REQUESTED":
            mismatch = self._weight_check(state, change, now_ms)
            if mismatch is not None:
                outputs.append(
                    Outbound(self.topics.anomalies, change["cart_id"], ANOMALY, mismatch)
                )
                state.anomaly_ids.append(mismatch["anomaly_id"])
                state.reasons.append(mismatch["description"])
            outputs.append(self._review(state, change, now_ms))
        if action in CLOSING_ACTIONS:
            state.closed_ms = now_ms
        return Result(state, outputs)

    @staticmethod
    def _flagged(state: AnomalyState, change: BasketChange, found: list[Anomaly]) -> bool:
        """An unexplained step whose grams an alert reports (now, or once its held fate is
        known): the checkout weight check expects those grams rather than report them twice."""
        if state.held is not None and state.held["event_id"] == change["event_id"]:
            return True
        return any(change["event_id"] in a["basket_change_ids"] for a in found)

    # -- step rules ------------------------------------------------------------------------

    def _step_alerts(self, state: AnomalyState, change: BasketChange, now_ms: int) -> list[Anomaly]:
        delta = change["grams_delta"]
        if change["frames_seen"] < 0:  # decided by weight alone: no camera evidence
            if change["action"] != "UNKNOWN":
                return []
            direction = "added" if delta > 0 else "removed"
            return [
                anomaly(
                    "UNEXPLAINED_WEIGHT_CHANGE",
                    "WARNING",
                    change,
                    now_ms,
                    f"{abs(delta):.0f} g {direction} that no catalog item explains",
                    measured=delta,
                )
            ]
        found = self._blocked(state, change, now_ms)
        held = state.held
        # working cameras saw no hand (with a camera down, nothing can be concluded)
        unseen = change["frames_with_hand"] == 0 and not change["blind_cameras"]
        if held is not None:
            before = held["grams_delta"]
            undone = (
                unseen
                and before * delta < 0
                and abs(before + delta) <= max(TAMPER_MATCH_G, 0.05 * abs(delta))
                and change["step_start_ms"] - held["step_end_ms"] <= TAMPER_WINDOW_MS
            )
            state.held = None
            if undone:
                shape = "leaning on" if before > 0 else "lifting"
                return [
                    *found,
                    anomaly(
                        "SCALE_TAMPER",
                        "CRITICAL",
                        change,
                        now_ms,
                        f"the scale moved {before:+.0f} g and back ({delta:+.0f} g) "
                        f"with no hand in view: {shape} the basket?",
                        measured=before,
                        earlier=held,
                    ),
                ]
            found.append(self._unseen(held, now_ms))
        if unseen:
            state.held = change
            return found
        return found + self._seen(change, now_ms)

    def _blocked(self, state: AnomalyState, change: BasketChange, now_ms: int) -> list[Anomaly]:
        found = []
        for camera in change["blind_cameras"]:
            if camera in state.blind:
                continue
            state.blind.append(camera)
            found.append(
                anomaly(
                    "CAMERA_BLOCKED",
                    "WARNING",
                    change,
                    now_ms,
                    f"camera {camera} gave no usable frame while the weight changed by "
                    f"{change['grams_delta']:+.0f} g",
                    key=(change["session_id"], f"camera-{camera}"),
                )
            )
        return found

    def _unseen(self, held: BasketChange, now_ms: int) -> Anomaly:
        """A held unseen step that was not undone."""
        grams = held["grams_delta"]
        if grams > 0:
            kind: AnomalyKind = "UNRECOGNIZED_ITEM"
            text = f"{grams:.0f} g went in and no camera saw an item in hand"
        else:
            kind = "REMOVAL_UNSEEN"
            like = f" (weighs like {held['weight_sku']})" if held["weight_sku"] else ""
            text = f"{-grams:.0f} g came out{like} and no camera saw a removal"
        return anomaly(kind, "WARNING", held, now_ms, text, measured=grams)

    def _seen(self, change: BasketChange, now_ms: int) -> list[Anomaly]:
        delta, seen = change["grams_delta"], change["vision_sku"]
        sure = seen is not None and change["vision_confidence"] >= SWAP_MIN_VISION
        if seen is not None and sure and change["weight_sku"] and self._weight_contradicts(change):
            units = max(1, change["vision_quantity"])
            return [
                anomaly(
                    "ITEM_SWAP",
                    "CRITICAL",
                    change,
                    now_ms,
                    f"the cameras saw {units} x {seen} ({change['vision_confidence']:.2f}) but "
                    f"the weight changed by {delta:+.0f} g" + f", like {change['weight_sku']}",
                    measured=delta,
                    expected=units * float(self.catalog[seen].unit_grams),
                )
            ]
        if change["action"] == "UNKNOWN" and delta > 0:
            return [
                anomaly(
                    "UNRECOGNIZED_ITEM",
                    "WARNING",
                    change,
                    now_ms,
                    f"{delta:.0f} g went in that no catalog item explains"
                    + (f" (the cameras saw {seen})" if seen else ""),
                    measured=delta,
                )
            ]
        return []

    def _weight_contradicts(self, change: BasketChange) -> bool:
        """No count (1-4) of what the cameras saw, or of its look-alikes (which the detector
        confuses), weighs what the step weighed. Items sold by weight fit any grams."""
        seen = change["vision_sku"]
        if seen is None or seen not in self.catalog:
            return False
        grams = abs(change["grams_delta"])
        for code in (seen, *self.catalog.lookalikes[seen]):
            sku = self.catalog[code]
            if sku.sold_by_weight:
                return False
            for units in range(1, 5):
                spread = math.sqrt(units * sku.unit_grams_sd**2 + change["grams_sigma"] ** 2)
                allowed = max(SWAP_SIGMAS * spread, SWAP_MIN_FRACTION * grams)
                if abs(grams - units * sku.unit_grams) <= allowed:
                    return False
        return True

    def _flush(self, state: AnomalyState, now_ms: int) -> list[Anomaly]:
        held, state.held = state.held, None
        return [self._unseen(held, now_ms)] if held is not None else []

    def _weight_check(
        self, state: AnomalyState, change: BasketChange, now_ms: int
    ) -> Anomaly | None:
        """Measured vs expected at checkout (`Basket.check_weight`, the one rule); grams
        already raised as unexplained steps are expected (reported once, with their evidence)."""
        check = state.basket.check_weight(self.catalog, change["scale_net_grams"], state.unknown_g)
        if check.within:
            return None
        return anomaly(
            "CHECKOUT_WEIGHT_MISMATCH",
            "CRITICAL" if check.severe else "WARNING",
            change,
            now_ms,
            f"scale reads {check.measured:.0f} g, basket should weigh {check.expected:.0f} g "
            f"({check.diff:+.0f} g, tolerance {check.tolerance:.0f} g)",
            measured=check.measured,
            expected=check.expected,
        )

    def _review(self, state: AnomalyState, change: BasketChange, now_ms: int) -> Outbound:
        review: SessionReview = {
            "event_id": derived_id("review", change["session_id"]),
            "cart_id": change["cart_id"],
            "store_id": change["store_id"],
            "session_id": change["session_id"],
            "anomaly_ids": list(state.anomaly_ids),
            "reasons": list(state.reasons),
            "reviewed_ms": now_ms,
        }
        return Outbound(self.topics.reviews, change["cart_id"], SESSION_REVIEW, review)

    def needs_tick(self, state: AnomalyState, now_ms: int) -> bool:
        return state.closed_ms is not None and now_ms - state.closed_ms >= STATE_RETENTION_MS

    def tick(self, state: AnomalyState, now_ms: int) -> Result[AnomalyState]:
        return Result(None if self.needs_tick(state, now_ms) else state)
