"""Building a basket change record: one place for its fields and their defaults."""

from __future__ import annotations

from typing import Any, Protocol

from cartstream.core.ids import derived_id
from cartstream.schemas.records import BasketAction, BasketChange


class Session(Protocol):
    """Whose change it is (a stage's per-session state has these)."""

    cart_id: str
    store_id: str
    session_id: str


def new_change(
    session: Session,
    seq: int,
    action: BasketAction,
    sku: str | None,
    quantity: int,
    *,
    step_start_ms: int,
    step_end_ms: int,
    source_event_id: str,
    source_produced_ms: int,
    now_ms: int,
    scale_net_grams: float,
    grams_delta: float = 0.0,
    grams_sigma: float = 0.0,
    confidence: float = 1.0,
    incomplete: bool = False,
    evidence: str = "weight",
    seen: dict[str, Any] | None = None,
) -> BasketChange:
    """Basket change number `seq` of a session, with an id derived from the two; `seen` holds
    what each kind of evidence said alone (frames, cameras, vision and weight verdicts)."""
    return {
        "event_id": derived_id("basket-change", session.session_id, seq),
        "cart_id": session.cart_id,
        "store_id": session.store_id,
        "session_id": session.session_id,
        "seq": seq,
        "action": action,
        "sku": sku,
        "quantity": quantity,
        "grams_delta": float(grams_delta),
        "grams_sigma": float(grams_sigma),
        "confidence": float(confidence),
        "step_start_ms": int(step_start_ms),
        "step_end_ms": int(step_end_ms),
        "scale_net_grams": float(scale_net_grams),
        "evidence": evidence,
        "source_event_id": source_event_id,
        "source_produced_ms": int(source_produced_ms),
        "published_ms": int(now_ms),
        "incomplete": incomplete,
        "frames_seen": -1,
        "frames_with_hand": -1,
        "blind_cameras": [],
        "vision_sku": None,
        "vision_quantity": 0,
        "vision_confidence": 0.0,
        "weight_sku": None,
        "frame_event_ids": [],
        **(seen or {}),  # type: ignore[typeddict-item]
    }
