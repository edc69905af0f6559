"""staff decisions on checkouts (append-only, with the final status as a view), console staff
accounts, and verified frame labels

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# A checkout's final status: its latest decision's (by decided_at, then decision_id), else its
# own. Decisions are only ever inserted, so the view is the audit trail's latest line.
FINAL_STATUS_VIEW = """
CREATE VIEW checkout_final_status AS
SELECT c.checkout_id, c.store_id, c.status AS pipeline_status,
       COALESCE(d.final_status, c.status) AS final_status,
       d.decision_id, d.staff, d.decided_at,
       COALESCE(d.subtotal_cents, c.subtotal_cents) AS final_subtotal_cents
FROM checkouts c
LEFT JOIN (
  SELECT *, ROW_NUMBER() OVER (
    PARTITION BY checkout_id ORDER BY decided_at DESC, decision_id DESC) AS rn
  FROM checkout_decisions
) d ON d.checkout_id = c.checkout_id AND d.rn = 1
"""


def upgrade() -> None:
    op.create_table(
        "checkout_decisions",
        sa.Column("decision_id", sa.String(64), primary_key=True),
        sa.Column("checkout_id", sa.String(36), nullable=False, index=True),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("cart_id", sa.String(128), nullable=False),
        sa.Column("store_id", sa.String(128), nullable=False, index=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("final_status", sa.String(16), nullable=False),
        sa.Column("previous_status", sa.String(16), nullable=False),
        sa.Column("staff", sa.String(128), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("items", JSON, nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("subtotal_cents", sa.BigInteger, nullable=False),
        sa.Column("changes", JSON, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("persisted_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.CheckConstraint("action IN ('APPROVE', 'CORRECT', 'REJECT')",
                           name="ck_checkout_decisions_action"),
        sa.CheckConstraint("final_status IN ('APPROVED', 'CORRECTED', 'REJECTED')",
                           name="ck_checkout_decisions_final_status"),
    )
    op.execute(FINAL_STATUS_VIEW)
    op.create_table(
        "staff_users",
        sa.Column("username", sa.String(128), primary_key=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("store_id", sa.String(128), nullable=True),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.CheckConstraint("is_admin OR store_id IS NOT NULL", name="ck_staff_users_scope"),
    )
    op.create_table(
        "frame_labels",
        sa.Column("label_id", sa.String(64), primary_key=True),
        sa.Column("frame_event_id", sa.String(64), nullable=False, index=True),
        sa.Column("cart_id", sa.String(128), nullable=False),
        sa.Column("store_id", sa.String(128), nullable=False, index=True),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("camera_id", sa.Integer, nullable=False),
        sa.Column("capture_time_ms", sa.BigInteger, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("predicted_sku", sa.String(64), nullable=True),
        sa.Column("sku", sa.String(64), nullable=True),
        sa.Column("boxes", JSON, nullable=False),
        sa.Column("jpeg", sa.LargeBinary, nullable=False),
        sa.Column("staff", sa.String(128), nullable=False),
        sa.Column("labelled_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.CheckConstraint("verdict IN ('CONFIRMED', 'CORRECTED', 'EMPTY')",
                           name="ck_frame_labels_verdict"),
    )


def downgrade() -> None:
    op.drop_table("frame_labels")
    op.drop_table("staff_users")
    op.execute("DROP VIEW checkout_final_status")
    op.drop_table("checkout_decisions")
