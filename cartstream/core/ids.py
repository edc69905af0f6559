"""Derived ids, the record headers every producer writes, and the wall clock in milliseconds.

Ids derive from their inputs (UUID v5), so re-processing an input re-creates the same ids and
every consumer can dedupe on them.
"""

from __future__ import annotations

import time
import unicodedata
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


ID_LIMIT = 128  # characters of an id a record, a row or a log line carries


def id_problem(value: str) -> str | None:
    """Why `value` cannot be an id (None: it can). An id is text a database, a header and a log
    line all keep as it is: no control characters (Postgres refuses NUL in text), no lone
    surrogates (not encodable), at most `ID_LIMIT` characters."""
    if len(value) > ID_LIMIT:
        return f"longer than {ID_LIMIT} characters"
    for ch in value:
        category = unicodedata.category(ch)
        if category == "Cc":
            return f"holds the control character {ch!r}"
        if category == "Cs":
            return "holds a lone surrogate"
    return None


def claimed_id(raw: bytes | None) -> str:
    """An id taken from a record's Kafka key, which anyone can write: the key itself when it is
    valid UTF-8 and a valid id (`id_problem`), else `key:` and the hex of its first 32 bytes, so
    alerts and rows built from a hostile key never carry bytes a store refuses (the incident: a
    key holding NUL made a SPOOFED_EVENT alert Postgres refused, and persist crash-looped)."""
    data = raw or b""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        text = None
    if text is not None and id_problem(text) is None:
        return text
    return "key:" + data[:32].hex() + ("..." if len(data) > 32 else "")
