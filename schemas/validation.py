"""Rules a decoded input record must meet before any stage acts on it.

Each `validate_*` raises ValidationError with a reason a person can act on; the stage then sends
the message to the dead-letter topic and carries on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import cv2
import numpy as np

from cartstream.core.ids import id_problem
from cartstream.exceptions import ValidationError
from cartstream.schemas.records import CartFrame, SessionEvent, WeightPacket

MAX_NET_GRAMS = 150_000.0  # a loaded cart's scale tops out well below 150 kg
MIN_NET_GRAMS = -500.0  # tare noise and a hand lifting the basket edge go slightly negative
MAX_SAMPLES_PER_PACKET = 2_000
MAX_FRAME_SIDE = 4096
MAX_SEQUENCE = 2**40  # a cart numbering 50 packets a second reaches this after 700 years
MAX_AGE_S = 7 * 86_400  # an event older than a week (a cart offline that long) is stale


def _require_ids(record: Mapping[str, Any], fields: Iterable[str]) -> None:
    for field in fields:
        value = record.get(field)
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(f"missing {field}")
        problem = id_problem(value)
        if problem is not None:
            raise ValidationError(f"{field} {problem}")


def _require_not_future(time_ms: int, now_ms: int, max_skew_s: float, field: str) -> None:
    """A time within [now - MAX_AGE_S, now + max_skew_s]."""
    if time_ms > now_ms + max_skew_s * 1000:
        ahead = (time_ms - now_ms) / 1000
        raise ValidationError(f"{field} is {ahead:.0f} s in the future (limit {max_skew_s:.0f} s)")
    if time_ms <= 0:
        raise ValidationError(f"{field} is not a time after 1970")
    if time_ms < now_ms - MAX_AGE_S * 1000:
        days = (now_ms - time_ms) / 86_400_000
        raise ValidationError(f"{field} is {days:.0f} days old (limit {MAX_AGE_S // 86_400} days)")


def _require_sequence(value: int, field: str) -> None:
    if value > MAX_SEQUENCE:
        raise ValidationError(f"{field} {value} beyond {MAX_SEQUENCE} (2^40)")


_IDS = ("event_id", "cart_id", "store_id", "session_id")


def validate_weight_packet(packet: WeightPacket, now_ms: int, max_skew_s: float) -> None:
    _require_ids(packet, _IDS)
    if packet["sequence"] < 0:
        raise ValidationError("negative sequence")
    _require_sequence(packet["sequence"], "sequence")
    _require_sequence(packet["last_frame_sequence"], "last_frame_sequence")
    rate = packet["sample_rate_hz"]
    if not math.isfinite(rate) or not 1.0 <= rate <= 2_000.0:
        raise ValidationError(f"sample_rate_hz {rate} outside 1..2000")
    samples = packet["samples_g"]
    if not samples:
        raise ValidationError("no samples")
    if len(samples) > MAX_SAMPLES_PER_PACKET:
        raise ValidationError(
            f"{len(samples)} samples in one packet (limit {MAX_SAMPLES_PER_PACKET})"
        )
    # plain Python over the decoded list: a packet holds a few samples, too few for numpy
    if not all(map(math.isfinite, samples)):
        raise ValidationError("NaN or infinite weight sample")
    low, high = float(min(samples)), float(max(samples))
    if low < MIN_NET_GRAMS:
        raise ValidationError(f"negative weight {low:.1f} g below {MIN_NET_GRAMS:.0f} g")
    if high > MAX_NET_GRAMS:
        raise ValidationError(f"absurd weight {high:.0f} g above {MAX_NET_GRAMS:.0f} g")
    end_ms = packet["start_time_ms"] + int(1000 * len(samples) / rate)
    _require_not_future(end_ms, now_ms, max_skew_s, "start_time_ms")


def validate_session_event(event: SessionEvent, now_ms: int, max_skew_s: float) -> None:
    _require_ids(event, _IDS)
    _require_not_future(event["time_ms"], now_ms, max_skew_s, "time_ms")
    if event["last_weight_sequence"] < -1 or event["last_frame_sequence"] < -1:
        raise ValidationError("last_*_sequence below -1")
    _require_sequence(event["last_weight_sequence"], "last_weight_sequence")
    _require_sequence(event["last_frame_sequence"], "last_frame_sequence")


def validate_frame(
    frame: CartFrame, now_ms: int, max_skew_s: float, max_bytes: int, decode: bool = True
) -> np.ndarray | None:
    """Check a frame; with `decode`, also decode the JPEG and return the BGR image."""
    _require_ids(frame, _IDS)
    if frame["camera_id"] < 0 or frame["sequence"] < 0:
        raise ValidationError("negative camera_id or sequence")
    _require_sequence(frame["sequence"], "sequence")
    _require_not_future(frame["capture_time_ms"], now_ms, max_skew_s, "capture_time_ms")
    size = len(frame["jpeg"])
    if size == 0:
        raise ValidationError("empty frame")
    if size > max_bytes:
        raise ValidationError(f"oversized frame: {size} bytes (limit {max_bytes})")
    w, h = frame["width"], frame["height"]
    if not (0 < w <= MAX_FRAME_SIDE and 0 < h <= MAX_FRAME_SIDE):
        raise ValidationError(f"frame size {w}x{h} outside 1..{MAX_FRAME_SIDE}")
    if not decode:
        return None
    image: np.ndarray | None = cv2.imdecode(
        np.frombuffer(frame["jpeg"], dtype=np.uint8), cv2.IMREAD_COLOR
    )
    if image is None:
        raise ValidationError("undecodable JPEG")
    if image.shape[0] != h or image.shape[1] != w:
        raise ValidationError(f"JPEG is {image.shape[1]}x{image.shape[0]}, record says {w}x{h}")
    return image
