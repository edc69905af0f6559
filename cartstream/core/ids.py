"""Derived ids, the record headers every producer writes, and the wall clock in milliseconds.

Ids derive from their inputs (UUID v5), so re-processing an input re-creates the same ids and
every consumer can dedupe on them.
"""

from __future__ import annotations

import time
import uuid

TRACEPARENT = "traceparent"  # the W3C trace context of the record's `send` span
EVENT_ID_HEADER = "event-id"  # the record's own id, readable without decoding it

_NAMESPACE = uuid.UUID("5b0c7f0e-4c1e-4d53-9a57-2f8f2b6a9c10")


def derived_id(*parts: object) -> str:
    """A deterministic UUID (v5) from its parts: re-processing yields the same id."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch."""
    return int(time.time() * 1000)
