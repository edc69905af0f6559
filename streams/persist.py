"""Persist: checkouts and anomalies -> Postgres (or the demo's SQLite), idempotently.

Inputs `checkouts` and `anomalies`. Writes run in a thread so the event loop never blocks on the
database; an input's offset is committed only after its row is written (or found already there).
A record that does not decode goes to the dead-letter topic. A database outage stops the agent
loudly rather than skipping rows: the worker crashes, restarts, and resumes from the last commit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import faust

from cartstream.schemas.records import ANOMALY, CHECKOUT, Anomaly, Checkout
from cartstream.services.persistence import Repository
from cartstream.services.settings import Settings
from cartstream.services.telemetry import message_span
from cartstream.streams.deadletter import decode_input
from cartstream.streams.runtime import Publisher, inbound_from, now_ms
from cartstream.streams.stage import Outbound

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
        inbound = inbound_from(msg)
        with message_span("process", msg.topic, parent=inbound.traceparent):
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
                await self.publisher.publish([decoded])
                return
            loop = asyncio.get_running_loop()
            with message_span("insert", "postgres", attributes={"db.system": "postgresql"}):
                if msg.topic == self.settings.topics.checkouts:
                    new = await loop.run_in_executor(
                        None, self.repository.save_checkout, cast(Checkout, decoded)
                    )
                else:
                    new = await loop.run_in_executor(
                        None, self.repository.save_anomaly, cast(Anomaly, decoded)
                    )
            self.written += int(new)
