"""Runs a `Sink` (persist) as a Faust agent: one database write at a time, retried while the
store is unavailable without committing past it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from opentelemetry.trace import SpanKind

from cartstream.core.settings import Settings
from cartstream.core.telemetry import mark_error, tracer
from cartstream.exceptions import StoreUnavailable
from cartstream.streams.input_runner import RETRY_FIRST_S, RETRY_MAX_S, InputRunner
from cartstream.streams.publish import Publisher
from cartstream.streams.stage import Inbound, Sink

log = logging.getLogger(__name__)


class SinkRunner(InputRunner):
    """Runs a `Sink`: each record written in a worker thread inside a CLIENT span (its
    `operation`), one at a time and in order. While the store is unavailable the same record is
    retried with backoff, so its offset (and every later one) stays uncommitted: nothing is
    skipped, and the worker's other agents keep running. A rebalance during the retries ends
    them without committing the record (it comes again). The agent never raises: Faust would
    restart it and acknowledge the record it died on."""

    def __init__(
        self, app: faust.App, sink: Sink, settings: Settings, publisher: Publisher
    ) -> None:
        super().__init__(app, sink, settings, publisher)
        self.sink = sink
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=sink.name)
        topic = app.topic(*self.input_topics(), value_serializer="raw", key_serializer="raw")
        self.in_order.agent = app.agent(topic, name=sink.name, concurrency=1)(self._run)

    async def _run(self, stream: faust.StreamT) -> None:
        log.info("%s: writing %s", self.sink.name, ", ".join(self.sink.inputs()))
        async for event in stream.events():
            await self.handle(event.message)

    async def _apply(self, record: Mapping[str, Any], inbound: Inbound, now: int) -> None:
        name, attributes = self.sink.operation(inbound)
        loop = asyncio.get_running_loop()
        delay = RETRY_FIRST_S
        while True:
            with tracer().start_as_current_span(
                name, kind=SpanKind.CLIENT, attributes=attributes
            ) as span:
                try:
                    new = await loop.run_in_executor(
                        self.executor, self.sink.write, record, inbound
                    )
                except StoreUnavailable as exc:
                    mark_error(span, str(exc), "UNAVAILABLE")
                    log.warning(
                        "%s: %s; retrying %s[%d]@%d in %.1f s",
                        self.sink.name,
                        exc,
                        inbound.topic,
                        inbound.partition,
                        inbound.offset,
                        delay,
                    )
                else:
                    span.set_attribute("cartstream.inserted", bool(new))
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            if not self.app.flow_control.is_active():
                # a rebalance waits for this record: give it up here; its acknowledgement is
                # not committable (faust_fixes), so it is delivered again, to this worker or
                # to the partition's next owner
                log.warning(
                    "%s: rebalancing; %s[%d]@%d will be delivered again",
                    self.sink.name,
                    inbound.topic,
                    inbound.partition,
                    inbound.offset,
                )
                return

    def close(self) -> None:
        self.executor.shutdown(wait=True)
