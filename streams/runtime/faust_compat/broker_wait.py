"""A worker that starts while no broker answers waits for one, for a bounded time.

aiokafka's clients try each bootstrap server once when they start and raise
`KafkaConnectionError` when none answers; Faust then stops the worker (exit 1). Once started,
the same clients reconnect for as long as it takes. So a broker that was down for a second or
two during a worker's start-up crashed the worker, while the same outage a moment later was
ridden out. Seen in CI (2026-12-02): the chaos suite SIGKILLed a worker, restarted it, and
killed the broker for ~2 s while the restarted worker was still starting; it exited with
"Unable to bootstrap from [('127.0.0.1', 45811, ...)]".

`wait_for_broker_on_bootstrap(wait_s)` makes every aiokafka bootstrap in the process (Faust's
producer, consumer and admin calls) try again with backoff (0.5 s, doubling to 5 s), logging
each wait, until `wait_s` (`kafka.startup_wait_s`) has passed; then it raises as before, so a
wrong address still ends in a clear error. A failed bootstrap leaves no state behind in the
client (aiokafka starts its metadata task only after one succeeds), so trying again is safe.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 5.0
_INSTALLED = "_cartstream_waits_for_broker"


@dataclass
class _Policy:
    wait_s: float


_policy = _Policy(wait_s=0.0)


async def _bootstrap_with_retries(original: Any, client: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _policy.wait_s
    delay = FIRST_DELAY_S
    while True:
        try:
            await original(client)
            return
        except KafkaConnectionError as exc:
            left = deadline - loop.time()
            if left <= 0:
                raise KafkaConnectionError(
                    f"{exc}; no broker answered for {_policy.wait_s:.0f} s (kafka.startup_wait_s)"
                ) from exc
            pause = min(delay, left)
            log.warning(
                "no Kafka broker answers (%s); trying again in %.1f s (%.0f s left to wait)",
                exc,
                pause,
                left,
            )
            await asyncio.sleep(pause)
            delay = min(delay * 2, MAX_DELAY_S)


def wait_for_broker_on_bootstrap(wait_s: float) -> float:
    """Install the wait on aiokafka's client (once per process; a later call sets `wait_s`,
    0 for none). Returns the wait it replaces."""
    replaced, _policy.wait_s = _policy.wait_s, wait_s
    if getattr(AIOKafkaClient.bootstrap, _INSTALLED, False):
        return replaced
    original = AIOKafkaClient.bootstrap

    async def bootstrap(self: Any) -> None:
        await _bootstrap_with_retries(original, self)

    setattr(bootstrap, _INSTALLED, True)
    AIOKafkaClient.bootstrap = bootstrap  # type: ignore[method-assign]
    return replaced
