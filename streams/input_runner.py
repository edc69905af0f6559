"""What every consuming runner does per input record: take it in order (`InOrder`), decode and
validate it, dead-letter what fails, else hand it to the runner's `_apply`; then count it.

`runner.StageRunner` (a `Stage`, in batches, with its table and deadline ticks) and
`sink_runner.SinkRunner` (a `Sink`, one database write at a time) build on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import faust
from opentelemetry.trace import Span

from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.core.telemetry import mark_error
from cartstream.streams.ingress import Admitted, Ingress
from cartstream.streams.publish import Publisher, inbound_from, record_processed
from cartstream.streams.runtime.faust_compat.in_order import InOrder
from cartstream.streams.stage import Inbound, Outbound, Sink, Stage
from cartstream.streams.tracing import process_span
from cartstream.streams.upstream import register

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5  # the first retry of a failed write or batch ...
RETRY_MAX_S = 10.0  # ... doubling up to this (a sink while its store is unavailable)


async def read_again_on_error(
    work: Awaitable[None],
    guard: InOrder,
    messages: Sequence[Any],
    what: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Await `work` (the handling of `messages`); on any error but a cancellation, log it as
    `what`, make the messages come again (`InOrder.again`: none of their acknowledgements is
    committable) and pause `RETRY_FIRST_S`. Never raises: Faust would restart an agent that
    raised and acknowledge what it held (`take_events` acks in a `finally`), so a row was never
    written or frames never got detections (issue 38). A record that fails every time holds its
    partition, loudly, rather than vanish from a bill."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s; reading %d records again in %.1f s", what, len(messages), RETRY_FIRST_S)
        await guard.again(messages)
        await sleep(RETRY_FIRST_S)


def in_order(
    app: faust.App, name: str, topics: Iterable[str], *, sequential: bool = True
) -> InOrder:
    """An `InOrder` for the agent `name` consuming `topics` (`sequential`: one batch at a time):
    started afresh at every rebalance, and checked for partitions whose records stopped coming
    every `InOrder.RESEEK_S`."""
    guard = InOrder(app, name, topics, sequential=sequential)
    register(app, name, guard)  # for a downstream stage's deadlines (upstream.py)

    async def _reset(sender: object, *_: object, **__: object) -> None:
        guard.reset()

    app.on_partitions_revoked.connect(_reset)
    app.timer(interval=InOrder.RESEEK_S, name=f"{name}-in-order")(guard.check)
    return guard


class InputRunner:
    """What every consuming runner does per input: decode and validate, dead-letter what fails
    (marking the `process <topic>` span Faust's sensor opened), else `_apply`; then count it."""

    def __init__(
        self, app: faust.App, node: Stage[Any] | Sink, settings: Settings, publisher: Publisher
    ) -> None:
        self.app = app
        self.node = node
        self.settings = settings
        self.publisher = publisher
        self.codec = publisher.codec
        self.ingress = Ingress(settings, publisher.codec, node)
        self.in_order = in_order(app, node.name, self.input_topics())

    def input_topics(self) -> list[str]:
        """What the agent consumes (and `InOrder` watches)."""
        return [*self.node.inputs().keys()]

    async def handle(self, msg: Any) -> None:
        if not await self.in_order.admit(msg):
            return
        started = time.perf_counter()
        inbound = inbound_from(msg)
        now = now_ms()
        span = process_span()
        span.set_attribute("cartstream.stage", self.node.name)
        admitted = self._admit(inbound, msg.value, now, span)
        if admitted.outputs:
            await self.publisher.publish(admitted.outputs, self.node.name)
        if admitted.record is not None:
            await self._apply(admitted.record, inbound, now, msg.value)
        record_processed(self.node.name, msg.topic, started, admitted.record is None)

    def _admit(self, inbound: Inbound, value: bytes, now: int, span: Span) -> Admitted:
        """Decode and validate; a dead letter marks the input's span failed with its reason."""
        admitted = self.ingress.admit(inbound, value, now)
        self._mark_letters(span, admitted.outputs)
        return admitted

    def _mark_letters(self, span: Span, outputs: Iterable[Outbound]) -> None:
        """A dead letter among an input's outputs marks its span failed, with its reason."""
        for out in outputs:
            if out.topic == self.settings.topics.dead_letters:
                mark_error(span, str(out.record["reason"]), str(out.record["error_type"]))

    async def _apply(
        self, record: Mapping[str, Any], inbound: Inbound, now: int, value: bytes = b""
    ) -> None:
        """Act on a decoded, valid record (`value`: its bytes, for a dead letter)."""
        raise NotImplementedError
