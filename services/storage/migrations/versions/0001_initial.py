"""checkouts, checkout items, anomalies, checkout-anomaly links

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "checkouts",
        sa.Column("checkout_id", sa.String(36), primary_key=True),
        sa.Column("session_id", sa.String(128), nullable=False, unique=True),
        sa.Column("cart_id", sa.String(128), nullable=False, index=True),
        sa.Column("store_id", sa.String(128), nullable=False, index=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("subtotal_cents", sa.BigInteger, nullable=False),
        sa.Column("measured_grams", sa.Float, nullable=False),
        sa.Column("expected_grams", sa.Float, nullable=False),
        sa.Column("tolerance_grams", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("review_reasons", JSON, nullable=False),
        sa.Column("reasoning", sa.String(16), nullable=False),
        sa.Column("persisted_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.CheckConstraint("status IN ('APPROVED', 'NEEDS_REVIEW')", name="ck_checkouts_status"),
    )
    op.create_table(
        "checkout_items",
        sa.Column("checkout_id", sa.String(36),
                  sa.ForeignKey("checkouts.checkout_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("sku", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price_cents", sa.BigInteger, nullable=False),
        sa.Column("grams", sa.Float, nullable=False),
        sa.Column("sold_by_weight", sa.Boolean, nullable=False),
        sa.Column("line_total_cents", sa.BigInteger, nullable=False),
        sa.CheckConstraint("quantity > 0", name="ck_checkout_items_quantity"),
    )
    op.create_table(
        "anomalies",
        sa.Column("anomaly_id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(40), nullable=False, index=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("cart_id", sa.String(128), nullable=False, index=True),
        sa.Column("store_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False, index=True),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("evidence", JSON, nullable=False),
        sa.Column("persisted_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )
    op.create_table(
        "checkout_anomalies",
        sa.Column("checkout_id", sa.String(36),
                  sa.ForeignKey("checkouts.checkout_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("anomaly_id", sa.String(36), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("checkout_anomalies")
    op.drop_table("anomalies")
    op.drop_table("checkout_items")
    op.drop_table("checkouts")
