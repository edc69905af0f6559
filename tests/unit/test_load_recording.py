"""The bench's recording: N cart copies of the templates, each with its own ids, its own start
within the ramp, absolute times from the run's start, in send order."""

from __future__ import annotations

from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import SESSION_EVENT, WEIGHT_PACKET
from cartstream.services.tools.load.recording import Planned, Templates, encode

T0 = 10**12 - 50_000  # a template's simulated clock


def _templates() -> Templates:
    ids = {"cart_id": "cart-001-0000", "store_id": "store-001", "session_id": "s-1"}
    started = {
        "event_id": "e-start",
        **ids,
        "kind": "STARTED",
        "time_ms": T0,
        "last_weight_sequence": -1,
        "last_frame_sequence": -1,
    }
    packet = {
        "event_id": "e-w0",
        **ids,
        "sequence": 0,
        "start_time_ms": T0 + 800,
        "sample_rate_hz": 50.0,
        "samples_g": [0.0] * 10,
        "last_frame_sequence": -1,
    }
    checkout = {**started, "event_id": "e-co", "kind": "CHECKOUT_REQUESTED", "time_ms": T0 + 4000}
    planned = [
        Planned(0, "cart.sessions", SESSION_EVENT, started),
        Planned(1000, "cart.weights", WEIGHT_PACKET, packet),
        Planned(4000, "cart.sessions", SESSION_EVENT, checkout),
    ]
    return Templates({"cart-001-0000": (T0, planned)})


def test_copies_have_their_own_ids_and_times_from_the_run_start() -> None:
    start = 1_800_000_000_000
    rec = encode(_templates(), carts=3, seconds=10, start_ms=start, ramp_s=2.0, seed=1)
    codec = AvroCodec()
    decoded = [(e, codec.decode(e.value)) for e in rec.events]
    assert len(decoded) == 9 and rec.checkouts == 3
    assert [e.at_ms for e in rec.events] == sorted(e.at_ms for e in rec.events)
    assert len({r["event_id"] for _, r in decoded}) == 9  # no copy repeats an event id
    assert len({r["session_id"] for _, r in decoded}) == 3
    assert len({e.key for e, _ in decoded}) == 3
    for e, r in decoded:
        assert r["cart_id"].encode() == e.key
        assert dict(e.headers)["event-id"] == r["event_id"].encode()
        when = r.get("time_ms", r.get("start_time_ms"))
        offset = 0 if r.get("kind") == "STARTED" else (4000 if "kind" in r else 800)
        phase = e.at_ms - (0 if r.get("kind") == "STARTED" else (4000 if "kind" in r else 1000))
        assert 0 <= phase < 2000  # each copy starts within the ramp
        assert when == start + phase + offset  # the record's own time, made absolute


def test_the_window_cuts_what_comes_after_it() -> None:
    rec = encode(_templates(), carts=2, seconds=2.0, start_ms=0, ramp_s=0.5, seed=3)
    assert rec.checkouts == 0 and all(e.at_ms < 2000 for e in rec.events)
