"""Runs a `Sink` (persist) as a Faust agent: one database write at a time, in order, and no
exception ever acknowledges a record.

Three ways a write can fail, three answers:
- **the store is unavailable** (`StoreUnavailable`: unreachable, a lost connection): the same
  record is retried with backoff for as long as it takes; its offset, and every later one, stays
  uncommitted, so nothing is skipped, and the worker's other agents keep running;
- **the store refuses the record** (any other error of the write: a constraint or a permission
  an operator's migration added, bytes the column type refuses, a bug): retried with backoff for
  `settings.sink_refused_retry_s` (a migration usually ends within it), then the record goes to
  the dead-letter topic with the refusal as its reason (error type `REFUSED`), the refusal is
  logged as an error and counted (`cartstream.dead_letters{stage="persist",error_type="REFUSED"}`,
  which the chart's `CartstreamRecordRefused` alert watches), and the partition moves on. A
  checkout is persisted or visibly dead-lettered, never silently dropped. (The incident: a 25 s
  CHECK constraint on `checkouts` lost 6 of 22 checkouts: the agent crashed on each
  `IntegrityError` and Faust acknowledged the record it held.)
- **anything else in the runner** (publishing a dead letter, a bug here): the record is read
  again (`InOrder.again`) after a pause. Faust would restart an agent that raised and
  acknowledge the record it died on.

A rebalance during the retries ends them without committing the record (it comes again, to this
worker or to the partition's next owner).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from opentelemetry.trace import SpanKind

from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.core.telemetry import mark_error, tracer
from cartstream.exceptions import StoreUnavailable
from cartstream.schemas.records import DEAD_LETTER
from cartstream.streams.deadletter import dead_letter
from cartstream.streams.input_runner import (
    RETRY_FIRST_S,
    RETRY_MAX_S,
    InputRunner,
    read_again_on_error,
)
from cartstream.streams.publish import Publisher
from cartstream.streams.stage import Inbound, Outbound, Sink

log = logging.getLogger(__name__)

REFUSED_ERROR = "REFUSED"  # a dead letter's error type: the store refused the record


def refusal(exc: BaseException) -> str:
    """A store's refusal in one line, for a dead letter's reason and the log."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class SinkRunner(InputRunner):
    """Runs a `Sink`: each record written in a worker thread inside a CLIENT span (its
    `operation`), one at a time and in order (module docstring for what a failure does)."""

    def __init__(
        self, app: faust.App, sink: Sink, settings: Settings, publisher: Publisher
    ) -> None:
        super().__init__(app, sink, settings, publisher)
        self.sink = sink
        self.refused_retry_s = settings.sink_refused_retry_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=sink.name)
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        topic = app.topic(*self.input_topics(), value_serializer="raw", key_serializer="raw")
        self.in_order.agent = app.agent(topic, name=sink.name, concurrency=1)(self._run)

    async def _run(self, stream: faust.StreamT) -> None:
        log.info("%s: writing %s", self.sink.name, ", ".join(self.sink.inputs()))
        async for event in stream.events():
            await self.guarded(event.message)

    async def guarded(self, msg: Any) -> None:
        """`handle`, and on any error the record read again after a pause: never raises."""
        what = f"{self.sink.name}: {msg.topic}[{msg.partition}]@{msg.offset} failed"
        await read_again_on_error(self.handle(msg), self.in_order, [msg], what, self.sleep)

    async def _apply(
        self, record: Mapping[str, Any], inbound: Inbound, now: int, value: bytes = b""
    ) -> None:
        name, attributes = self.sink.operation(inbound)
        loop = asyncio.get_running_loop()
        delay = RETRY_FIRST_S
        refused_since: float | None = None
        where = f"{inbound.topic}[{inbound.partition}]@{inbound.offset}"
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
                    refused_since = None  # an outage is waited out, however long
                    log.warning("%s: %s; retrying %s in %.1f s", self.sink.name, exc, where, delay)
                except Exception as exc:
                    why = refusal(exc)
                    mark_error(span, why, REFUSED_ERROR)
                    now_s = self.clock()
                    refused_since = now_s if refused_since is None else refused_since
                    if now_s - refused_since >= self.refused_retry_s:
                        await self._give_up(inbound, value, why, now_s - refused_since)
                        return
                    log.warning(
                        "%s: the store refused %s (%s); retrying in %.1f s, dead-lettered if it "
                        "still refuses %.0f s after the first refusal",
                        self.sink.name,
                        where,
                        why,
                        delay,
                        self.refused_retry_s,
                    )
                else:
                    span.set_attribute("cartstream.inserted", bool(new))
                    return
            await self.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            if not self.app.flow_control.is_active():
                # a rebalance waits for this record: give it up here; its acknowledgement is
                # not committable (faust_fixes), so it is delivered again, to this worker or
                # to the partition's next owner
                log.warning("%s: rebalancing; %s will be delivered again", self.sink.name, where)
                return

    async def _give_up(self, inbound: Inbound, value: bytes, why: str, for_s: float) -> None:
        """The record to the dead-letter topic with the refusal as its reason (published and
        acknowledged before the record is), loudly."""
        reason = f"refused by the store for {for_s:.0f} s: {why}"
        log.error(
            "%s: dead-lettering %s[%d]@%d: %s",
            self.sink.name,
            inbound.topic,
            inbound.partition,
            inbound.offset,
            reason,
        )
        letter = dead_letter(self.sink.name, inbound, value, REFUSED_ERROR, reason, now_ms())
        key = (inbound.key or b"").decode(errors="replace")
        outbound = Outbound(self.settings.topics.dead_letters, key, DEAD_LETTER, letter)
        await self.publisher.publish([outbound], self.sink.name)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
