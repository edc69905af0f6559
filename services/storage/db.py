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
