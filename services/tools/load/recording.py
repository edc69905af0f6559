"""What N carts send during a bench run, pre-encoded.

Simulating and rendering 1 000 carts would take longer than the run, so `K` template carts are
simulated once (`carts.simulate`, the same code the demo uses) and each of the N carts is a copy
of one template with its own cart, session and event ids, starting at its own moment within the
first `ramp_s`. In `reasoning` mode the frames are replaced by what the committed detector finds
in them (the detect stage's own `handle_batch`, run here once per template frame), published at
the frame's capture time, so the measured path starts at reason; in `full` mode the frames go as
they are.

Times in a recording are relative (ms from the run's start); `encode` stamps them absolute, so
every record looks freshly produced when it is sent on schedule.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cartstream.core.ids import EVENT_ID_HEADER, derived_id
from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import CART_FRAME, SESSION_EVENT
from cartstream.services.carts.simulate import SimConfig, cart_events, plan_carts
from cartstream.streams.stage import Inbound

Mode = Literal["reasoning", "full"]
_ID_FIELDS = ("event_id", "frame_event_id")


@dataclass(frozen=True)
class Planned:
    """One record to send: when (ms from the run's start), where, and what (not yet encoded)."""

    at_ms: int
    topic: str
    schema: str
    record: dict[str, Any]


@dataclass
class Templates:
    """The template carts' records: per cart, its first record's time and its records (`at_ms`
    relative to that first one; the records' own times as simulated)."""

    carts: dict[str, tuple[int, list[Planned]]] = field(default_factory=dict)

    @classmethod
    def simulate(
        cls, settings: Settings, catalog: Catalog, carts: int, seconds: float, mode: Mode, seed: int
    ) -> Templates:
        sessions = max(1, int(seconds // 60) + 2)  # a session lasts about a minute or two
        sim = SimConfig(carts=carts, sessions=sessions, seed=seed, run_id=f"bench{seed}")
        planned = plan_carts(sim, catalog, now_ms=10**12)
        by_cart: dict[str, list[Planned]] = {}
        first: dict[str, int] = {}
        for at_ms, topic, key, schema, record in cart_events(
            planned, catalog, settings.topics, sim.rate_hz
        ):
            start = first.setdefault(key, at_ms)
            by_cart.setdefault(key, []).append(Planned(at_ms - start, topic, schema, record))
        if mode == "reasoning":
            by_cart = {c: _detections_for(settings, catalog, evs) for c, evs in by_cart.items()}
        return cls({c: (first[c], evs) for c, evs in by_cart.items()})


def _detections_for(settings: Settings, catalog: Catalog, events: list[Planned]) -> list[Planned]:
    """The cart's records with each frame replaced by the detect stage's outputs for it."""
    from cartstream.streams.detect import DetectStage

    stage = DetectStage(settings, catalog)
    stage.start()
    try:
        out: list[Planned] = []
        frames = [e for e in events if e.schema == CART_FRAME]
        found: dict[str, list[Any]] = {}
        for i in range(0, len(frames), 32):
            batch = frames[i : i + 32]
            inbounds = [Inbound(e.topic, 0, 0, None, e.at_ms) for e in batch]
            outputs = stage.handle_batch([e.record for e in batch], inbounds, [b""] * len(batch), 0)
            for o in outputs:
                found.setdefault(str(o.record.get("frame_event_id")), []).append(o)
        for e in events:
            if e.schema != CART_FRAME:
                out.append(e)
                continue
            for o in found.get(str(e.record["event_id"]), []):
                out.append(Planned(e.at_ms, o.topic, o.schema, dict(o.record)))
        return out
    finally:
        stage.close()


@dataclass(frozen=True)
class Encoded:
    at_ms: int  # ms from the run's start
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class Recording:
    """Every record of a run in send order, encoded with absolute times from `start_ms`."""

    start_ms: int
    events: list[Encoded]
    carts: int
    checkouts: int  # checkout requests in the window
    by_topic: Counter[str]

    @property
    def seconds(self) -> float:
        return self.events[-1].at_ms / 1000.0 if self.events else 0.0


def encode(
    templates: Templates, carts: int, seconds: float, start_ms: int, ramp_s: float, seed: int
) -> Recording:
    """N cart copies of the templates within `seconds`, their times stamped from `start_ms`."""
    codec = AvroCodec()
    rng = random.Random(seed)
    names = sorted(templates.carts)
    window_ms = int(seconds * 1000)
    out: list[Encoded] = []
    by_topic: Counter[str] = Counter()
    checkouts = 0
    headers_of: dict[str, list[tuple[str, bytes]]] = {}
    for n in range(carts):
        template = names[n % len(names)]
        phase = int(rng.uniform(0, ramp_s) * 1000)
        cart = f"{template}-x{n:05d}"
        first, planned = templates.carts[template]
        for e in planned:
            at = e.at_ms + phase
            if at >= window_ms:
                break
            record = _copy(e.record, cart, n, start_ms + phase - first)
            if e.schema == SESSION_EVENT and record.get("kind") == "CHECKOUT_REQUESTED":
                checkouts += 1
            base = headers_of.setdefault(e.schema, codec.headers(e.schema))
            event_id = str(record.get("event_id", ""))
            out.append(
                Encoded(
                    at,
                    e.topic,
                    cart.encode(),
                    codec.encode(e.schema, record),
                    [*base, (EVENT_ID_HEADER, event_id.encode())],
                )
            )
            by_topic[e.topic] += 1
    out.sort(key=lambda x: x.at_ms)
    return Recording(start_ms, out, carts, checkouts, by_topic)


def _copy(record: Mapping[str, Any], cart: str, n: int, shift_ms: int) -> dict[str, Any]:
    """The template record as cart copy `n`: own ids, times moved by `shift_ms`."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if k == "cart_id":
            out[k] = cart
        elif k == "session_id":
            out[k] = derived_id("bench-session", n, v)
        elif k in _ID_FIELDS:
            out[k] = derived_id("bench-event", n, v)
        elif k.endswith("_ms") and isinstance(v, int) and v >= 10**11:  # a time, not a duration
            out[k] = v + shift_ms
        else:
            out[k] = v
    return out
