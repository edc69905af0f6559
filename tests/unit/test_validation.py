from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from cartstream.exceptions import ValidationError
from cartstream.models.render import encode_jpeg
from cartstream.schemas.validation import (
    validate_frame,
    validate_session_event,
    validate_weight_packet,
)

NOW = int(time.time() * 1000)
IDS = {"event_id": "e", "cart_id": "c", "store_id": "s", "session_id": "x"}


def packet(**kw: Any) -> Any:
    return {
        **IDS,
        "sequence": 0,
        "start_time_ms": NOW - 1000,
        "sample_rate_hz": 50.0,
        "samples_g": [10.0, 11.0],
        "last_frame_sequence": -1,
        **kw,
    }


def frame(**kw: Any) -> Any:
    img = np.zeros((32, 48, 3), dtype=np.uint8)
    return {
        **IDS,
        "camera_id": 0,
        "sequence": 0,
        "capture_time_ms": NOW,
        "width": 48,
        "height": 32,
        "jpeg": encode_jpeg(img),
        **kw,
    }


def test_good_records_pass() -> None:
    validate_weight_packet(packet(), NOW, 300)
    validate_session_event(
        {
            **IDS,
            "kind": "STARTED",
            "time_ms": NOW,
            "last_weight_sequence": -1,
            "last_frame_sequence": -1,
        },
        NOW,
        300,
    )
    assert validate_frame(frame(), NOW, 300, 1_000_000).shape == (32, 48, 3)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (packet(samples_g=[1.0, float("nan")]), "NaN"),
        (packet(samples_g=[float("inf")]), "NaN or infinite"),
        (packet(samples_g=[-2000.0]), "negative weight"),
        (packet(samples_g=[9e6]), "absurd weight"),
        (packet(samples_g=[]), "no samples"),
        (packet(sample_rate_hz=0.0), "sample_rate_hz"),
        (packet(session_id=""), "missing session_id"),
        (packet(start_time_ms=NOW + 10 * 60_000), "in the future"),
        (packet(start_time_ms=86_400_000), "days old"),
        (packet(sequence=2**62), "beyond"),
        (packet(last_frame_sequence=2**62), "last_frame_sequence"),
    ],
)
def test_bad_weight_packets(record: Any, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        validate_weight_packet(record, NOW, 300)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (frame(jpeg=b""), "empty frame"),
        (frame(jpeg=b"\xff\xd8garbage"), "undecodable JPEG"),
        (frame(width=64), "record says"),
        (frame(cart_id=" "), "missing cart_id"),
        (frame(capture_time_ms=NOW + 6 * 60_000), "in the future"),
        (frame(capture_time_ms=NOW - 8 * 86_400_000), "days old"),
        (frame(sequence=2**62), "beyond"),
    ],
)
def test_bad_frames(record: Any, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        validate_frame(record, NOW, 300, 1_000_000)


def test_oversized_frame() -> None:
    with pytest.raises(ValidationError, match="oversized"):
        validate_frame(frame(), NOW, 300, max_bytes=100)
