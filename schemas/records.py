"""Typed views of the Avro records (what the codec reads and writes), one per schema."""

from __future__ import annotations

from typing import Literal

# pydantic reads these TypedDicts (a held change in anomaly state) and needs this TypedDict
# before Python 3.12
from typing_extensions import TypedDict

SessionEventKind = Literal["STARTED", "CHECKOUT_REQUESTED", "ABANDONED"]
BasketAction = Literal["ADD", "REMOVE", "UNKNOWN", "CHECKOUT_REQUESTED", "ABANDONED"]
ClosingAction = Literal["CHECKOUT_REQUESTED", "ABANDONED"]
STEP_ACTIONS = ("ADD", "REMOVE", "UNKNOWN")  # a basket change decided from a weight step
CLOSING_ACTIONS = ("CHECKOUT_REQUESTED", "ABANDONED")  # a session's closing marker
AnomalyKind = Literal[
    "UNEXPLAINED_WEIGHT_CHANGE",
    "CHECKOUT_WEIGHT_MISMATCH",
    "UNRECOGNIZED_ITEM",
    "ITEM_SWAP",
    "CAMERA_BLOCKED",
    "SCALE_TAMPER",
    "REMOVAL_UNSEEN",
    "SPOOFED_EVENT",
]
Severity = Literal["INFO", "WARNING", "CRITICAL"]
CheckoutStatus = Literal["APPROVED", "NEEDS_REVIEW"]
DecisionAction = Literal["APPROVE", "CORRECT", "REJECT"]
FinalStatus = Literal["APPROVED", "CORRECTED", "REJECTED"]

# Schema (file) name of each record type.
CART_FRAME = "cart_frame"
WEIGHT_PACKET = "weight_packet"
SESSION_EVENT = "session_event"
DETECTION = "detection"
BASKET_CHANGE = "basket_change"
ANOMALY = "anomaly"
SESSION_REVIEW = "session_review"
CHECKOUT = "checkout"
DEAD_LETTER = "dead_letter"
REVIEW_FRAME = "review_frame"
SHADOW_DETECTION = "shadow_detection"
CHECKOUT_DECISION = "checkout_decision"


class CartFrame(TypedDict):
    event_id: str
    cart_id: str
    store_id: str
    session_id: str
    camera_id: int
    sequence: int
    capture_time_ms: int
    width: int
    height: int
    jpeg: bytes


class WeightPacket(TypedDict):
    event_id: str
    cart_id: str
    store_id: str
    session_id: str
    sequence: int
    start_time_ms: int
    sample_rate_hz: float
    samples_g: list[float]
    last_frame_sequence: int  # v2; -1 when the cart sent no frame yet (or speaks v1)


class SessionEvent(TypedDict):
    event_id: str
    cart_id: str
    store_id: str
    session_id: str
    kind: SessionEventKind
    time_ms: int
    last_weight_sequence: int
    last_frame_sequence: int


class DetectionBox(TypedDict):
    sku: str
    score: float
    x0: float
    y0: float
    x1: float
    y1: float


class Detection(TypedDict):
    event_id: str
    frame_event_id: str
    cart_id: str
    store_id: str
    session_id: str
    camera_id: int
    frame_sequence: int
    capture_time_ms: int
    model_version: str
    boxes: list[DetectionBox]
    brightness: float  # v2: mean grey level 0-255 (-1: not measured)
    contrast: float  # v2: grey-level standard deviation


class ShadowDetection(TypedDict):
    event_id: str
    frame_event_id: str
    cart_id: str
    store_id: str
    camera_id: int
    capture_time_ms: int
    champion_version: str
    candidate_version: str
    champion_boxes: list[DetectionBox]
    candidate_boxes: list[DetectionBox]
    champion_ms: float
    candidate_ms: float


class ReviewFrame(TypedDict):
    event_id: str
    frame_event_id: str
    cart_id: str
    store_id: str
    session_id: str
    camera_id: int
    capture_time_ms: int
    model_version: str
    reason: str
    best_score: float
    boxes: list[DetectionBox]
    jpeg: bytes


class BasketChange(TypedDict):
    event_id: str
    cart_id: str
    store_id: str
    session_id: str
    seq: int
    action: BasketAction
    sku: str | None
    quantity: int
    grams_delta: float
    grams_sigma: float
    confidence: float
    step_start_ms: int
    step_end_ms: int
    scale_net_grams: float
    evidence: str
    source_event_id: str
    source_produced_ms: int
    published_ms: int
    incomplete: bool
    # v2: the evidence behind a step (defaults on markers and weight-only decisions)
    frames_seen: int
    frames_with_hand: int
    blind_cameras: list[int]
    vision_sku: str | None
    vision_quantity: int
    vision_confidence: float
    weight_sku: str | None
    frame_event_ids: list[str]


class Anomaly(TypedDict):
    anomaly_id: str
    kind: AnomalyKind
    severity: Severity
    cart_id: str
    store_id: str
    session_id: str
    detected_ms: int
    description: str
    basket_change_ids: list[str]
    frame_event_ids: list[str]
    weight_from_ms: int | None
    weight_to_ms: int | None
    grams_measured: float | None
    grams_expected: float | None


class SessionReview(TypedDict):
    event_id: str
    cart_id: str
    store_id: str
    session_id: str
    anomaly_ids: list[str]
    reasons: list[str]
    reviewed_ms: int


class CheckoutItem(TypedDict):
    sku: str
    name: str
    quantity: int
    unit_price_cents: int
    grams: float
    sold_by_weight: bool
    line_total_cents: int


class Checkout(TypedDict):
    checkout_id: str
    cart_id: str
    store_id: str
    session_id: str
    requested_ms: int
    decided_ms: int
    currency: str
    items: list[CheckoutItem]
    item_count: int
    subtotal_cents: int
    measured_grams: float
    expected_grams: float
    tolerance_grams: float
    status: CheckoutStatus
    review_reasons: list[str]
    anomaly_ids: list[str]
    reasoning: str


class QuantityChange(TypedDict):
    sku: str
    quantity_before: int
    quantity_after: int


class CheckoutDecision(TypedDict):
    """A store employee's decision on a checkout (`checkout_decision.v1.avsc`)."""

    decision_id: str
    checkout_id: str
    session_id: str
    cart_id: str
    store_id: str
    action: DecisionAction
    final_status: FinalStatus
    staff: str
    decided_ms: int
    previous_status: str
    items: list[CheckoutItem]
    item_count: int
    subtotal_cents: int
    currency: str
    changes: list[QuantityChange]
    note: str


class DeadLetter(TypedDict):
    event_id: str
    stage: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_key: bytes | None
    error_type: str
    reason: str
    failed_ms: int
    payload: bytes
    payload_truncated: bool
    headers: dict[str, bytes]
