"""The relational model of persisted checkouts and anomalies (SQLAlchemy 2, typed)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JsonType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class CheckoutRow(Base):
    __tablename__ = "checkouts"

    checkout_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), unique=True)
    cart_id: Mapped[str] = mapped_column(String(128), index=True)
    store_id: Mapped[str] = mapped_column(String(128), index=True)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    currency: Mapped[str] = mapped_column(String(3))
    item_count: Mapped[int] = mapped_column(Integer)
    subtotal_cents: Mapped[int] = mapped_column(BigInteger)
    measured_grams: Mapped[float] = mapped_column(Float)
    expected_grams: Mapped[float] = mapped_column(Float)
    tolerance_grams: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), index=True)
    review_reasons: Mapped[list[str]] = mapped_column(JsonType)
    reasoning: Mapped[str] = mapped_column(String(16))
    persisted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    items: Mapped[list[CheckoutItemRow]] = relationship(
        back_populates="checkout", order_by="CheckoutItemRow.line_no"
    )


class CheckoutItemRow(Base):
    __tablename__ = "checkout_items"

    checkout_id: Mapped[str] = mapped_column(
        ForeignKey("checkouts.checkout_id", ondelete="CASCADE"), primary_key=True
    )
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(256))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_cents: Mapped[int] = mapped_column(BigInteger)
    grams: Mapped[float] = mapped_column(Float)
    sold_by_weight: Mapped[bool] = mapped_column(Boolean)
    line_total_cents: Mapped[int] = mapped_column(BigInteger)

    checkout: Mapped[CheckoutRow] = relationship(back_populates="items")


class AnomalyRow(Base):
    __tablename__ = "anomalies"

    anomaly_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    cart_id: Mapped[str] = mapped_column(String(128), index=True)
    store_id: Mapped[str] = mapped_column(String(128))
    session_id: Mapped[str] = mapped_column(String(128), index=True)
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    description: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JsonType)
    persisted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class CheckoutAnomalyRow(Base):
    """Which anomalies a checkout's decision named (the anomaly row may land before or after)."""

    __tablename__ = "checkout_anomalies"

    checkout_id: Mapped[str] = mapped_column(
        ForeignKey("checkouts.checkout_id", ondelete="CASCADE"), primary_key=True
    )
    anomaly_id: Mapped[str] = mapped_column(String(36), primary_key=True)


class DecisionRow(Base):
    """A staff decision on a checkout (append-only: the audit trail). The latest per checkout
    gives its final status (the view `checkout_final_status`)."""

    __tablename__ = "checkout_decisions"

    decision_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    checkout_id: Mapped[str] = mapped_column(String(36), index=True)
    session_id: Mapped[str] = mapped_column(String(128))
    cart_id: Mapped[str] = mapped_column(String(128))
    store_id: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(16))
    final_status: Mapped[str] = mapped_column(String(16))
    previous_status: Mapped[str] = mapped_column(String(16))
    staff: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    items: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    item_count: Mapped[int] = mapped_column(Integer)
    subtotal_cents: Mapped[int] = mapped_column(BigInteger)
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    note: Mapped[str] = mapped_column(Text)
    persisted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class StaffUserRow(Base):
    """A console login: store staff see one store (`store_id`), an admin every store."""

    __tablename__ = "staff_users"

    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    store_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FrameLabelRow(Base):
    """A person's verified label of one camera frame (with its JPEG, so the label outlives the
    broker's retention): what `cartstream review labels` exports for `train-detector --extra`."""

    __tablename__ = "frame_labels"

    label_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    frame_event_id: Mapped[str] = mapped_column(String(64), index=True)
    cart_id: Mapped[str] = mapped_column(String(128))
    store_id: Mapped[str] = mapped_column(String(128), index=True)
    session_id: Mapped[str] = mapped_column(String(128))
    camera_id: Mapped[int] = mapped_column(Integer)
    capture_time_ms: Mapped[int] = mapped_column(BigInteger)
    verdict: Mapped[str] = mapped_column(String(16))
    predicted_sku: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sku: Mapped[str | None] = mapped_column(String(64), nullable=True)
    boxes: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    staff: Mapped[str] = mapped_column(String(128))
    labelled_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
