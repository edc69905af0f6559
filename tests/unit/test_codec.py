from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cartstream.exceptions import DecodeError
from cartstream.schemas.codec import MAGIC, AvroCodec
from cartstream.schemas.records import CHECKOUT, SESSION_EVENT, WEIGHT_PACKET
from cartstream.schemas.registry import default_registry

codec = AvroCodec()


def packet(samples: list[float]) -> dict[str, object]:
    return {
        "event_id": "e1",
        "cart_id": "c1",
        "store_id": "s1",
        "session_id": "x",
        "sequence": 3,
        "start_time_ms": 1_700_000_000_000,
        "sample_rate_hz": 50.0,
        "samples_g": samples,
    }


def test_every_topic_has_a_schema() -> None:
    names = set(default_registry().names())
    assert {
        "cart_frame",
        "weight_packet",
        "session_event",
        "detection",
        "basket_change",
        "anomaly",
        "checkout",
        "dead_letter",
        "session_review",
    } <= names


def test_single_object_framing() -> None:
    data = codec.encode(WEIGHT_PACKET, packet([1.0, 2.0]))
    assert data[:2] == MAGIC
    assert data[2:10] == default_registry().latest(WEIGHT_PACKET).fingerprint
    assert codec.decode(data, expect=WEIGHT_PACKET)["samples_g"] == [1.0, 2.0]


@given(st.lists(st.floats(-500, 150_000, width=32), max_size=50), st.integers(0, 2**40))
def test_weight_packet_roundtrip(samples: list[float], sequence: int) -> None:
    record = {**packet(samples), "sequence": sequence}
    back = codec.decode(codec.encode(WEIGHT_PACKET, record))
    assert back["sequence"] == sequence
    assert all(
        math.isclose(a, b, rel_tol=1e-6) for a, b in zip(back["samples_g"], samples, strict=True)
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter than"),
        (b'{"json": true}', "marker"),
        (MAGIC + b"\x00" * 8 + b"\x02", "unknown writer schema"),
    ],
)
def test_not_avro_is_a_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        codec.decode(data)


def test_wrong_schema_for_topic() -> None:
    data = codec.encode(WEIGHT_PACKET, packet([1.0]))
    with pytest.raises(DecodeError, match="wrong schema"):
        codec.decode(data, expect=SESSION_EVENT)


def test_truncated_and_padded_bodies() -> None:
    data = codec.encode(WEIGHT_PACKET, packet([1.0, 2.0, 3.0]))
    with pytest.raises(DecodeError, match="corrupt"):
        codec.decode(data[:-5])
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(data + b"\x00\x01")


def test_headers_name_the_schema() -> None:
    headers = dict(codec.headers(CHECKOUT))
    assert headers["cartstream-schema"] == b"io.cartstream.Checkout/v1"
