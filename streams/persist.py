"""Persist: checkouts and anomalies -> Postgres (or the demo's SQLite), idempotently.

Inputs `checkouts` and `anomalies`. Writes run in a thread so the event loop never blocks on the
database; an input's offset is committed only after its row is written (or found already there).
A record that does not decode goes to the dead-letter topic. A database outage stops the agent
loudly rather than skipping rows: the worker crashes, restarts, and resumes from the last commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import faust
from opentelemetry.trace import SpanKind

from cartstream.schemas.records import ANOMALY, CHECKOUT
from cartstream.services.metrics import instruments
from cartstream.services.persistence import Repository
from cartstream.services.settings import Settings
from cartstream.services.telemetry import mark_error, record_attributes, tracer
from cartstream.streams.deadletter import decode_input
from cartstream.streams.runtime import Publisher, inbound_from, now_ms, record_processed
from cartstream.streams.stage import Outbound
from cartstream.streams.tracing import process_span

log = logging.getLogger(__name__)


class PersistRunner:
    def __init__(
        self, app: faust.App, settings: Settings, publisher: Publisher, repository: Repository
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.repository = repository
        topics = settings.topics
        self.schemas = {topics.checkouts: CHECKOUT, topics.anomalies: ANOMALY}
        topic = app.topic(*self.schemas, value_serializer="raw", key_serializer="raw")
        self.written = 0
        app.agent(topic, name="persist", concurrency=1)(self._run)

    async def _run(self, stream: faust.StreamT) -> None:
        log.info(
            "persist: writing %s to %s",
            ", ".join(self.schemas),
            self.repository.engine.url.render_as_string(hide_password=True),
        )
        async for event in stream.events():
            await self.handle(event.message)

    async def handle(self, msg: Any) -> None:
        """One record, inside its `process <topic>` span (Faust's sensor); the write is a
        client span under it, so a checkout's trace ends at its row."""
        started = time.perf_counter()
        inbound = inbound_from(msg)
        span = process_span()
        span.set_attribute("cartstream.stage", "persist")
        decoded = decode_input(
            "persist",
            self.schemas,
            None,
            self.publisher.codec,
            inbound,
            msg.value,
            now_ms(),
            self.settings.topics.dead_letters,
        )
        if isinstance(decoded, Outbound):
            mark_error(span, str(decoded.record["reason"]), str(decoded.record["error_type"]))
            await self.publisher.publish([decoded], "persist")
        else:
            span.set_attributes(record_attributes(decoded))
            is_checkout = msg.topic == self.settings.topics.checkouts
            new = await self._write(decoded, is_checkout)
            self.written += int(new)
            if new:
                self._count(decoded, is_checkout)
        record_processed("persist", msg.topic, started, isinstance(decoded, Outbound))

    async def _write(self, record: Mapping[str, Any], is_checkout: bool) -> bool:
        table = "checkouts" if is_checkout else "anomalies"
        url = self.repository.engine.url
        with tracer().start_as_current_span(
            f"INSERT {table}",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": url.get_backend_name(),
                "db.namespace": url.database or "",
                "db.operation.name": "INSERT",
                "db.collection.name": table,
                "cartstream.stage": "persist",
            },
        ) as span:
            save: Callable[[Any], bool] = (
                self.repository.save_checkout if is_checkout else self.repository.save_anomaly
            )
            new = await asyncio.get_running_loop().run_in_executor(None, save, record)
            span.set_attribute("cartstream.inserted", bool(new))
            return bool(new)

    @staticmethod
    def _count(record: Mapping[str, Any], is_checkout: bool) -> None:
        """Rows written for the first time (re-deliveries are not counted twice)."""
        meter = instruments()
        if is_checkout:
            status = str(record["status"])
            meter.checkouts.add(1, {"status": status})
            latency_s = max(0.0, (now_ms() - int(record["requested_ms"])) / 1000)
            meter.checkout_latency.record(latency_s, {"status": status})
        else:
            meter.anomalies.add(
                1, {"kind": str(record["kind"]), "severity": str(record["severity"])}
            )
