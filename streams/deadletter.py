"""Decode and validate an input message, or turn it into a dead letter that says why."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cartstream.core.ids import derived_id
from cartstream.exceptions import DecodeError, ValidationError
from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import DEAD_LETTER, DeadLetter
from cartstream.streams.stage import Inbound, Outbound, Sink, Stage

log = logging.getLogger(__name__)

# bytes of the original value kept in a dead letter: the letter must stay under the producer's
# largest request (Faust: 1 000 000 bytes), headers and reason included
PAYLOAD_LIMIT = 256 * 1024
KEY_LIMIT = 1024  # bytes of the original key kept
HEADER_LIMIT = 1024  # bytes of each original header value kept ...
HEADERS_KEPT = 32  # ... of this many headers
REASON_LIMIT = 2000  # characters of the reason


def dead_letter(
    stage: str, inbound: Inbound, value: bytes, error_type: str, reason: str, now_ms: int
) -> DeadLetter:
    """The letter for a bad input. Bounded in size whatever came in (a multi-MB value, a huge
    key or headers), so that publishing it can never fail: what is cut is said to be."""
    raw = bytes(value or b"")
    return {
        "event_id": derived_id(
            "dead-letter", stage, inbound.topic, inbound.partition, inbound.offset
        ),
        "stage": stage,
        "source_topic": inbound.topic,
        "source_partition": inbound.partition,
        "source_offset": inbound.offset,
        "source_key": inbound.key[:KEY_LIMIT] if inbound.key is not None else None,
        "error_type": error_type,
        "reason": reason[:REASON_LIMIT],
        "failed_ms": now_ms,
        "payload": raw[:PAYLOAD_LIMIT],
        "payload_truncated": len(raw) > PAYLOAD_LIMIT,
        "headers": {
            name[:256]: value[:HEADER_LIMIT]
            for name, value in list(inbound.headers.items())[:HEADERS_KEPT]
        },
    }


@dataclass
class _Window:
    started: float
    logged: int = 0
    unlogged: int = 0


class LetterLog:
    """Logs dead letters one by one, at most `per_window` per stage in each `window_s`; past
    that, letters are counted and the count is logged when the stage's next letter comes after
    the window. A flood of bad input must not flood the log as well (a line per letter made one
    worker take 76.5 s instead of 70.1 s for 100 000 malformed records, `cartstream bench
    hostile`): every letter is on the dead-letter topic and counted by the
    `cartstream.dead_letters` metric."""

    def __init__(
        self,
        per_window: int = 20,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def letter(self, stage: str, inbound: Inbound, reason: str) -> None:
        now = self.clock()
        window = self._windows.get(stage)
        if window is None or now - window.started >= self.window_s:
            if window is not None and window.unlogged:
                log.warning(
                    "%s: %d more dead letters in %.0f s, not logged one by one (each is on the "
                    "dead-letter topic)",
                    stage,
                    window.unlogged,
                    now - window.started,
                )
            window = self._windows[stage] = _Window(now)
        if window.logged >= self.per_window:
            window.unlogged += 1
            return
        window.logged += 1
        last = window.logged == self.per_window
        left = self.window_s - (now - window.started)
        log.warning(
            "%s: dead-lettered %s[%d]@%d: %s%s",
            stage,
            inbound.topic,
            inbound.partition,
            inbound.offset,
            reason,
            f" (the stage's letters of the next {left:.0f} s are counted, not logged)"
            if last
            else "",
        )


LETTER_LOG = LetterLog()


Validator = Callable[[Mapping[str, Any], Inbound, int], None]


def decode_input(
    stage_name: str,
    schemas: Mapping[str, str],
    validate: Validator | None,
    codec: AvroCodec,
    inbound: Inbound,
    value: bytes,
    now_ms: int,
    dead_letter_topic: str,
) -> Mapping[str, Any] | Outbound:
    """The decoded, valid record; or the Outbound dead letter to publish instead.

    `schemas`: input topic -> schema name; `validate` raises ValidationError for a bad record.
    """
    try:
        record = codec.decode(value, expect=schemas[inbound.topic])
        if validate is not None:
            validate(record, inbound, now_ms)
        return record
    except DecodeError as exc:
        error_type, reason = "DECODE", str(exc)
    except ValidationError as exc:
        error_type, reason = "VALIDATION", exc.reason
    except (KeyError, TypeError, ValueError) as exc:  # a record that decodes but lacks fields
        error_type, reason = "VALIDATION", f"{type(exc).__name__}: {exc}"
    LETTER_LOG.letter(stage_name, inbound, reason)
    letter = dead_letter(stage_name, inbound, value, error_type, reason, now_ms)
    key = (inbound.key or b"").decode(errors="replace")
    return Outbound(dead_letter_topic, key, DEAD_LETTER, letter)


def decode_for_stage(
    stage: Stage[Any] | Sink,
    codec: AvroCodec,
    inbound: Inbound,
    value: bytes,
    now_ms: int,
    dead_letter_topic: str,
) -> Mapping[str, Any] | Outbound:
    """`decode_input` with a stage's own inputs and validation."""
    return decode_input(
        stage.name, stage.inputs(), stage.validate, codec, inbound, value, now_ms, dead_letter_topic
    )
