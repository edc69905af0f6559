"""Corrections to faust-streaming (0.15) that at-least-once delivery needs, in one place.

**Skipped messages were committed.** During a rebalance Faust suspends its flow control, and a
stream then *skips* the messages still buffered for it (or fetched under the previous consumer
generation) without handing them to the agent, and *acknowledges* them anyway ("otherwise the
lag would increase", faust/streams.py). The revocation's commit then includes those offsets, so
the partition's next owner starts after messages that nobody processed: a session's state
misses a run of weight packets ("weight packets 179..204 missing") and its checkout may never
come. Measured by the chaos suite: 3 of 22 checkouts lost in one run, ~25 consecutive packets
(one buffered batch) skipped each time.

The correction: an acknowledgement that arrives while the flow is suspended, or for a message
of an older generation, marks the message done (so the rebalance does not wait for it) but
does not make its offset committable. The message is delivered again after the rebalance,
from the last committed offset; every stage is idempotent, so a repeat changes nothing. The
cost is re-processing at most one buffer per partition per rebalance.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_PATCHED = "_cartstream_never_commits_skipped"


def committable(app: Any, message: Any) -> bool:
    """May this acknowledgement move the committed offset? Not while a rebalance has the flow
    suspended, nor for a message fetched under an earlier consumer generation."""
    if not app.flow_control.is_active():
        return False
    generation = getattr(message, "generation_id", None)
    return generation is None or generation == app.consumer_generation_id


def never_commit_skipped_messages() -> None:
    """Install the correction on Faust's consumer (idempotent, once per process)."""
    from faust.transport import consumer as module

    consumer_cls = module.Consumer
    if getattr(consumer_cls.ack, _PATCHED, False):
        return
    original = consumer_cls.ack

    def ack(self: Any, message: Any) -> bool:
        if committable(self.app, message):
            return bool(original(self, message))
        with module.ack_lock:
            if not message.acked:
                message.acked = True
                self._unacked_messages.discard(message)
                log.debug(
                    "not committing %s[%d]@%d: skipped during a rebalance; it is re-delivered",
                    message.topic,
                    message.partition,
                    message.offset,
                )
        return False

    setattr(ack, _PATCHED, True)
    consumer_cls.ack = ack  # type: ignore[method-assign]
