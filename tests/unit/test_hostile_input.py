"""Hostile input never crashes a stage: whatever arrives on an input topic ends as a dead letter
with its reason or is handled as an ordinary record (the chaos suite's fuzz, without a broker)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from cartstream.core.settings import Settings
from cartstream.exceptions import DecodeError
from cartstream.models.catalog import Catalog
from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import WEIGHT_PACKET
from cartstream.services.tools.chaos.fuzz import (
    DEAD_LETTER_KINDS,
    HARMLESS_KINDS,
    HostileInput,
)
from cartstream.streams.anomalies import AnomalyStage
from cartstream.streams.detect import DetectStage
from cartstream.streams.persist import PersistSink
from cartstream.streams.reason import ReasonStage
from cartstream.streams.reconcile import ReconcileStage
from cartstream.streams.testing import MemoryPipeline
from tests.unit.test_persist_sink import MemoryStore

CODEC = AvroCodec()


@pytest.fixture(scope="module")
def every_stage() -> Any:
    settings, catalog = Settings(), Catalog.load()
    stages = [
        DetectStage(settings, catalog),
        ReasonStage(settings, catalog),
        AnomalyStage(settings, catalog),
        ReconcileStage(settings, catalog),
    ]
    return settings, stages, [PersistSink(settings, MemoryStore())]


def fresh(every_stage: Any) -> MemoryPipeline:
    settings, stages, sinks = every_stage
    return MemoryPipeline(settings, stages, sinks=sinks)


@given(st.binary(max_size=300))
def test_the_codec_decodes_or_says_why(data: bytes) -> None:
    try:
        assert isinstance(CODEC.decode(data), dict)
    except DecodeError as exc:
        assert str(exc)


@hsettings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    topic=st.sampled_from(["cart.frames", "cart.weights", "cart.sessions", "cart.detections"]),
    value=st.binary(max_size=200),
    key=st.none() | st.binary(max_size=20),
)
def test_arbitrary_bytes_on_any_input_become_dead_letters(
    every_stage: Any, topic: str, value: bytes, key: bytes | None
) -> None:
    p = fresh(every_stage)
    p.publish_raw(topic, key, value)
    p.run()
    letters = p.records("dead-letters")
    assert len(letters) == 1 and letters[0]["source_topic"] == topic and letters[0]["reason"]


@hsettings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sequence=st.integers(min_value=0, max_value=2**63 - 1),
    rate=st.floats(allow_nan=True, allow_infinity=True),
    samples=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=30),
    start=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_weight_packets_with_any_values_are_applied_or_dead_lettered(
    every_stage: Any, sequence: int, rate: float, samples: list[float], start: int
) -> None:
    packet = {
        "event_id": "e",
        "cart_id": "fuzz-c",
        "store_id": "s",
        "session_id": "fuzz-s",
        "sequence": sequence,
        "start_time_ms": start,
        "sample_rate_hz": rate,
        "samples_g": samples,
        "last_frame_sequence": -1,
    }
    p = fresh(every_stage)
    p.publish("cart.weights", "fuzz-c", WEIGHT_PACKET, packet)
    p.run()  # never raises
    assert len(p.records("dead-letters")) <= 1


def test_each_hostile_kind_ends_as_its_dead_letter_or_is_harmless(every_stage: Any) -> None:
    settings = every_stage[0]
    source = HostileInput(settings, seed=3)
    p = fresh(every_stage)
    sent: dict[str, set[str]] = defaultdict(set)
    for i, h in enumerate(source.records(len(DEAD_LETTER_KINDS + HARMLESS_KINDS) * 3)):
        headers = {"fuzz-id": str(i).encode(), "fuzz-kind": h.kind.encode()}
        p.publish_raw(h.topic, h.key, h.value or b"", headers)
        sent[h.kind].add(str(i))
    p.run()
    lettered: dict[str, set[str]] = defaultdict(set)
    for letter in p.records("dead-letters"):  # a topic two stages read is lettered by both
        kind = bytes(letter["headers"]["fuzz-kind"]).decode()
        lettered[kind].add(bytes(letter["headers"]["fuzz-id"]).decode())
    for kind in DEAD_LETTER_KINDS:
        assert lettered[kind] == sent[kind], kind
    for kind in HARMLESS_KINDS:
        assert not lettered[kind], kind
    # a checkout request for a session with no weight closes it empty: a fuzz cart is billed
    # nothing (that it can close a session at all is what per-cart authentication stops)
    for checkout in every_stage[2][0].store.checkouts.values():
        assert checkout["cart_id"].startswith("fuzz-")
        assert checkout["items"] == [] and checkout["subtotal_cents"] == 0


def test_a_dead_letter_stays_publishable_whatever_came_in() -> None:
    from cartstream.schemas.records import DEAD_LETTER
    from cartstream.streams.deadletter import dead_letter
    from cartstream.streams.stage import Inbound

    headers = {f"h{i}": b"x" * 10_000 for i in range(100)}
    inbound = Inbound("cart.frames", 3, 17, b"k" * 100_000, 0, headers)
    letter = dead_letter("detect", inbound, b"v" * 3_000_000, "VALIDATION", "r" * 50_000, 0)
    encoded = CODEC.encode(DEAD_LETTER, letter)
    assert len(encoded) < 500_000  # Faust's producer refuses requests over 1 000 000 bytes
    assert letter["payload_truncated"] and len(letter["payload"]) == 256 * 1024
