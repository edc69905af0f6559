"""The console API's request and response bodies (its OpenAPI schema is built from these)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cartstream.schemas.records import CheckoutItem  # one line of a checkout, as published

SkuCode = str


class Change(BaseModel):
    seq: int
    event_id: str
    action: str
    sku: str
    quantity: int
    confidence: float = Field(description="How sure the pipeline was of this change, 0-1.")
    step_end_ms: int


class OpenAlert(BaseModel):
    anomaly_id: str
    description: str


class LiveBasket(BaseModel):
    """A cart's basket as the stream state holds it now (not the database)."""

    cart_id: str
    store_id: str
    session_id: str
    status: Literal["shopping", "checking_out", "checked_out", "closed"]
    currency: str
    items: list[CheckoutItem]
    item_count: int
    subtotal_cents: int
    changes: list[Change]
    alerts: list[OpenAlert]
    last_change_ms: int | None


class CartSummary(BaseModel):
    cart_id: str
    store_id: str
    session_id: str
    status: str
    changes: int
    alerts: int
    last_ms: int


class ReviewEntry(BaseModel):
    checkout_id: str
    cart_id: str
    store_id: str
    session_id: str
    requested_ms: int
    status: str
    final_status: str
    item_count: int
    subtotal_cents: int
    review_reasons: list[str]


class AnomalyOut(BaseModel):
    anomaly_id: str
    kind: str
    severity: str
    description: str
    detected_ms: int


class DecisionOut(BaseModel):
    decision_id: str
    action: str
    final_status: str
    previous_status: str
    staff: str
    decided_ms: int
    item_count: int
    subtotal_cents: int
    changes: list[dict[str, int | str]]
    note: str


class CheckoutOut(ReviewEntry):
    currency: str
    items: list[CheckoutItem] = Field(description="The items as the pipeline decided them.")
    final_items: list[CheckoutItem] = Field(
        description="The items after the latest staff decision."
    )
    final_subtotal_cents: int
    measured_grams: float
    expected_grams: float
    anomalies: list[AnomalyOut]
    decisions: list[DecisionOut]


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision_id: str = Field(
        min_length=8,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Made when the form is shown; the same id sent twice is one decision.",
    )
    action: Literal["APPROVE", "CORRECT", "REJECT"]
    quantities: dict[SkuCode, int] = Field(
        default_factory=dict, description="CORRECT only: SKU -> units after the correction."
    )
    note: str = Field(default="", max_length=2000)


class DecisionAccepted(BaseModel):
    decision_id: str
    checkout_id: str
    final_status: str
    subtotal_cents: int
    published_to: str


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frame_event_id: str = Field(min_length=1, max_length=64)
    verdict: Literal["CONFIRMED", "CORRECTED", "EMPTY"]
    sku: str | None = Field(default=None, max_length=64)


class LabelSaved(BaseModel):
    label_id: str
    frame_event_id: str
    sku: str | None
    verdict: str


class Problem(BaseModel):
    detail: str
