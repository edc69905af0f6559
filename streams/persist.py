"""Persist: checkouts, anomalies, staff decisions -> Postgres (or the demo's SQLite), idempotently.

A `Sink`: inputs `checkouts`, `anomalies` and `checkout.decisions` (from the console), run by
`streams.sink_runner.SinkRunner` on the broker and by `MemoryPipeline` in tests, through the same
decode / dead-letter / span / metrics path as every stage. The store is injected
(`CheckoutStore`; the SQL one is `services.storage.repository.Repository`), so this layer
never imports the database code.

Invariants:
- a write is `INSERT ... ON CONFLICT DO NOTHING` on an id derived from the event, so a
  re-delivered record writes nothing and is not counted twice in the metrics;
- an input's offset is committed only after its row is written (or found already there);
- while the store is unreachable (`StoreUnavailable`) the runner retries the same record with
  backoff: nothing is skipped, and the worker's other agents keep running.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

from cartstream.core.ids import now_ms
from cartstream.core.metrics import instruments
from cartstream.core.settings import Settings
from cartstream.schemas.records import (
    ANOMALY,
    CHECKOUT,
    CHECKOUT_DECISION,
    Anomaly,
    Checkout,
    CheckoutDecision,
)
from cartstream.streams.stage import Inbound


class CheckoutStore(Protocol):
    """Where persist writes: idempotent saves that say whether the row was new."""

    def save_checkout(self, checkout: Checkout) -> bool: ...

    def save_anomaly(self, anomaly: Anomaly) -> bool: ...

    def save_decision(self, decision: CheckoutDecision) -> bool:
        """Append a staff decision to the checkout's audit trail (its latest is final)."""
        ...

    def describe(self) -> dict[str, str]:
        """`db.system.name` and `db.namespace` for the write spans."""
        ...

    def close(self) -> None: ...


class PersistSink:
    name = "persist"

    def __init__(self, settings: Settings, store: CheckoutStore) -> None:
        self.topics = settings.topics
        self.store = store
        self.written = 0  # rows written for the first time by this process

    def start(self) -> None:
        return None

    def close(self) -> None:
        self.store.close()

    def inputs(self) -> Mapping[str, str]:
        return {
            self.topics.checkouts: CHECKOUT,
            self.topics.anomalies: ANOMALY,
            self.topics.checkout_decisions: CHECKOUT_DECISION,
        }

    def validate(self, record: Mapping[str, Any], inbound: Inbound, now_ms: int) -> None:
        return None  # produced by our own stages with the same schema; decoding suffices

    def _table(self, inbound: Inbound) -> str:
        if inbound.topic == self.topics.checkouts:
            return "checkouts"
        if inbound.topic == self.topics.checkout_decisions:
            return "checkout_decisions"
        return "anomalies"

    def operation(self, inbound: Inbound) -> tuple[str, dict[str, str]]:
        table = self._table(inbound)
        return f"INSERT {table}", {
            **self.store.describe(),
            "db.operation.name": "INSERT",
            "db.collection.name": table,
            "cartstream.stage": self.name,
        }

    def write(self, record: Mapping[str, Any], inbound: Inbound) -> bool:
        table = self._table(inbound)
        if table == "checkouts":
            new = self.store.save_checkout(cast(Checkout, record))
        elif table == "checkout_decisions":
            new = self.store.save_decision(cast(CheckoutDecision, record))
        else:
            new = self.store.save_anomaly(cast(Anomaly, record))
        if new:
            self.written += 1
            self._count(record, inbound)
        return new

    def _count(self, record: Mapping[str, Any], inbound: Inbound) -> None:
        """Rows written for the first time (re-deliveries are not counted twice)."""
        meter = instruments()
        table = self._table(inbound)
        if table == "checkout_decisions":
            return
        if table == "checkouts":
            status = str(record["status"])
            meter.checkouts.add(1, {"status": status})
            latency_s = max(0.0, (now_ms() - int(record["requested_ms"])) / 1000)
            meter.checkout_latency.record(latency_s, {"status": status})
        else:
            meter.anomalies.add(
                1, {"kind": str(record["kind"]), "severity": str(record["severity"])}
            )
