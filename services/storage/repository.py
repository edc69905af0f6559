"""Idempotent writes of checkouts and anomalies, and the reads the CLI and tests need.

Every write is `INSERT ... ON CONFLICT DO NOTHING` on a key derived from the event (checkout id
from the session, anomaly id from its evidence), inside one transaction per record: a re-delivered
checkout can never make a second row, nor half of one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, selectinload

from cartstream.exceptions import StoreUnavailable
from cartstream.schemas.records import Anomaly, Checkout, CheckoutDecision
from cartstream.services.storage.db import (
    AnomalyRow,
    CheckoutAnomalyRow,
    CheckoutItemRow,
    CheckoutRow,
    DecisionRow,
)

DECISION_COLUMNS = (
    "decision_id",
    "checkout_id",
    "session_id",
    "cart_id",
    "store_id",
    "action",
    "final_status",
    "previous_status",
    "staff",
    "item_count",
    "subtotal_cents",
    "note",
)


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def make_engine(url: str) -> Engine:
    engine = create_engine(url, pool_pre_ping=True, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

    return engine


class Repository:
    """The SQL `CheckoutStore` of `streams.persist`, and the reads of the CLI and tests."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    @classmethod
    def from_url(cls, url: str) -> Repository:
        return cls(make_engine(url))

    def describe(self) -> dict[str, str]:
        url = self.engine.url
        return {"db.system.name": url.get_backend_name(), "db.namespace": url.database or ""}

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction; a lost or refused connection becomes StoreUnavailable (retryable),
        anything else (a constraint, a bug) propagates as it is."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise StoreUnavailable(f"database unavailable: {_first_line(exc)}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailable(f"database connection lost: {_first_line(exc)}") from exc
            raise

    def save_checkout(self, checkout: Checkout) -> bool:
        """Store a checkout with its lines and anomaly links; False if it was already there."""
        row = {
            "checkout_id": checkout["checkout_id"],
            "session_id": checkout["session_id"],
            "cart_id": checkout["cart_id"],
            "store_id": checkout["store_id"],
            "requested_at": _when(checkout["requested_ms"]),
            "decided_at": _when(checkout["decided_ms"]),
            "currency": checkout["currency"],
            "item_count": checkout["item_count"],
            "subtotal_cents": checkout["subtotal_cents"],
            "measured_grams": checkout["measured_grams"],
            "expected_grams": checkout["expected_grams"],
            "tolerance_grams": checkout["tolerance_grams"],
            "status": checkout["status"],
            "review_reasons": list(checkout["review_reasons"]),
            "reasoning": checkout["reasoning"],
        }
        with self._transaction() as conn:
            stmt = self._insert(CheckoutRow).values(**row).on_conflict_do_nothing()
            inserted = conn.execute(stmt.returning(CheckoutRow.checkout_id)).first() is not None
            if not inserted:
                return False
            lines = [
                {"checkout_id": checkout["checkout_id"], "line_no": i, **item}
                for i, item in enumerate(checkout["items"])
            ]
            if lines:
                conn.execute(self._insert(CheckoutItemRow).values(lines).on_conflict_do_nothing())
            links = [
                {"checkout_id": checkout["checkout_id"], "anomaly_id": a}
                for a in checkout["anomaly_ids"]
            ]
            if links:
                conn.execute(
                    self._insert(CheckoutAnomalyRow).values(links).on_conflict_do_nothing()
                )
        return True

    def save_anomaly(self, anomaly: Anomaly) -> bool:
        evidence = {
            k: anomaly[k]  # type: ignore[literal-required]
            for k in ("basket_change_ids", "frame_event_ids", "weight_from_ms", "weight_to_ms")
        }
        row = {
            "anomaly_id": anomaly["anomaly_id"],
            "kind": anomaly["kind"],
            "severity": anomaly["severity"],
            "cart_id": anomaly["cart_id"],
            "store_id": anomaly["store_id"],
            "session_id": anomaly["session_id"],
            "detected_at": _when(anomaly["detected_ms"]),
            "description": anomaly["description"],
            "evidence": {
                **evidence,
                "grams_measured": anomaly["grams_measured"],
                "grams_expected": anomaly["grams_expected"],
            },
        }
        with self._transaction() as conn:
            stmt = self._insert(AnomalyRow).values(**row).on_conflict_do_nothing()
            return conn.execute(stmt.returning(AnomalyRow.anomaly_id)).first() is not None

    def save_decision(self, decision: CheckoutDecision) -> bool:
        """Append a staff decision (never updated: the table is the audit trail)."""
        row = {
            **{k: decision[k] for k in DECISION_COLUMNS},  # type: ignore[literal-required]
            "decided_at": _when(decision["decided_ms"]),
            "items": list(decision["items"]),
            "changes": list(decision["changes"]),
        }
        with self._transaction() as conn:
            stmt = self._insert(DecisionRow).values(**row).on_conflict_do_nothing()
            return conn.execute(stmt.returning(DecisionRow.decision_id)).first() is not None

    # -- reads ---------------------------------------------------------------------------

    def count_checkouts(self) -> int:
        with Session(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(CheckoutRow)) or 0)

    def checkout_times(self) -> list[tuple[datetime, datetime]]:
        """(requested_at, persisted_at) of every checkout row (the benches' last hop)."""
        with Session(self.engine) as s:
            q = select(CheckoutRow.requested_at, CheckoutRow.persisted_at)
            return [(r, p) for r, p in s.execute(q).all()]

    def count_sessions(self, session_ids: list[str]) -> int:
        """How many of these sessions have their checkout row."""
        with Session(self.engine) as s:
            q = select(func.count()).where(CheckoutRow.session_id.in_(session_ids))
            return int(s.scalar(q) or 0)

    def checkouts(self, session_ids: list[str] | None = None) -> list[CheckoutRow]:
        with Session(self.engine) as s:
            q = select(CheckoutRow).options(selectinload(CheckoutRow.items))
            if session_ids is not None:
                q = q.where(CheckoutRow.session_id.in_(session_ids))
            return list(s.scalars(q))

    def basket_of(self, session_id: str) -> dict[str, int] | None:
        """SKU -> quantity of the persisted checkout of a session (None if not persisted)."""
        with Session(self.engine) as s:
            row = s.scalar(
                select(CheckoutRow)
                .options(selectinload(CheckoutRow.items))
                .where(CheckoutRow.session_id == session_id)
            )
            return None if row is None else {i.sku: i.quantity for i in row.items}

    def anomalies_by_kind(self) -> Counter[str]:
        with Session(self.engine) as s:
            rows = s.execute(select(AnomalyRow.kind, func.count()).group_by(AnomalyRow.kind))
            return Counter({kind: int(n) for kind, n in rows})

    def anomaly_links(self, checkout_id: str) -> list[str]:
        with Session(self.engine) as s:
            q = select(CheckoutAnomalyRow.anomaly_id).where(
                CheckoutAnomalyRow.checkout_id == checkout_id
            )
            return list(s.scalars(q))


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
