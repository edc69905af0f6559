"""What the console reads and writes in the database: the review queue, a checkout with its
alerts and decision trail, and verified frame labels.

Decisions are written by persist (from `checkout.decisions`), never here: the console only
publishes them. The final status is the view `checkout_final_status` (the latest decision's,
else the pipeline's). Every read takes the store it is scoped to (None: every store, an admin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, selectinload

from cartstream.services.storage.db import (
    AnomalyRow,
    CheckoutAnomalyRow,
    CheckoutRow,
    DecisionRow,
    FrameLabelRow,
)


@dataclass
class CheckoutDetail:
    checkout: CheckoutRow
    final_status: str
    anomalies: list[AnomalyRow] = field(default_factory=list)
    decisions: list[DecisionRow] = field(default_factory=list)  # oldest first


class ReviewStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def queue(self, store_id: str | None, limit: int = 200) -> list[tuple[CheckoutRow, str]]:
        """Checkouts whose final status is still NEEDS_REVIEW, newest first, with that status."""
        return self._by_status(store_id, "NEEDS_REVIEW", limit)

    def decided(self, store_id: str | None, limit: int = 50) -> list[tuple[CheckoutRow, str]]:
        """Checkouts a person decided on, newest first, with their final status."""
        return self._by_status(store_id, None, limit)

    def _by_status(
        self, store_id: str | None, status: str | None, limit: int
    ) -> list[tuple[CheckoutRow, str]]:
        where = ["f.final_status = :status" if status else "f.decision_id IS NOT NULL"]
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if store_id is not None:
            where.append("f.store_id = :store")
            params["store"] = store_id
        sql = text(
            "SELECT f.checkout_id, f.final_status FROM checkout_final_status f "
            "JOIN checkouts c ON c.checkout_id = f.checkout_id WHERE "
            + " AND ".join(where)
            + " ORDER BY c.requested_at DESC LIMIT :limit"
        )
        with Session(self.engine) as s:
            found = {cid: final for cid, final in s.execute(sql, params).all()}
            rows = s.scalars(
                select(CheckoutRow)
                .options(selectinload(CheckoutRow.items))
                .where(CheckoutRow.checkout_id.in_(found))
                .order_by(CheckoutRow.requested_at.desc())
            )
            return [(row, found[row.checkout_id]) for row in rows]

    def detail(self, checkout_id: str) -> CheckoutDetail | None:
        with Session(self.engine) as s:
            row = s.scalar(
                select(CheckoutRow)
                .options(selectinload(CheckoutRow.items))
                .where(CheckoutRow.checkout_id == checkout_id)
            )
            if row is None:
                return None
            final = s.execute(
                text("SELECT final_status FROM checkout_final_status WHERE checkout_id = :c"),
                {"c": checkout_id},
            ).scalar_one()
            linked = select(CheckoutAnomalyRow.anomaly_id).where(
                CheckoutAnomalyRow.checkout_id == checkout_id
            )
            anomalies = s.scalars(
                select(AnomalyRow)
                .where(
                    (AnomalyRow.anomaly_id.in_(linked)) | (AnomalyRow.session_id == row.session_id)
                )
                .order_by(AnomalyRow.detected_at)
            )
            decisions = s.scalars(
                select(DecisionRow)
                .where(DecisionRow.checkout_id == checkout_id)
                .order_by(DecisionRow.decided_at, DecisionRow.decision_id)
            )
            return CheckoutDetail(row, str(final), list(anomalies), list(decisions))

    def recent_alerts(self, store_id: str | None, limit: int = 50) -> list[AnomalyRow]:
        q = select(AnomalyRow).order_by(AnomalyRow.detected_at.desc()).limit(limit)
        if store_id is not None:
            q = q.where(AnomalyRow.store_id == store_id)
        with Session(self.engine) as s:
            return list(s.scalars(q))

    # -- labels ------------------------------------------------------------------------------

    def save_label(self, label: dict[str, Any]) -> bool:
        """Store a verified label (idempotent on `label_id`); False if it was there."""
        with Session(self.engine) as s, s.begin():
            if s.get(FrameLabelRow, label["label_id"]) is not None:
                return False
            s.add(FrameLabelRow(**label))
            return True

    def labelled_frames(self, store_id: str | None) -> set[str]:
        q = select(FrameLabelRow.frame_event_id)
        if store_id is not None:
            q = q.where(FrameLabelRow.store_id == store_id)
        with Session(self.engine) as s:
            return set(s.scalars(q))

    def labels(self, since: datetime | None = None) -> list[FrameLabelRow]:
        """Every verified label, oldest first (the latest per frame wins on export)."""
        q = select(FrameLabelRow).order_by(FrameLabelRow.labelled_at, FrameLabelRow.label_id)
        if since is not None:
            q = q.where(FrameLabelRow.labelled_at >= since)
        with Session(self.engine) as s:
            return list(s.scalars(q))
