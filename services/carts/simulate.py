"""Simulated carts: shopper sessions turned into the events a real cart would publish.

Each cart runs its sessions one after another on its own clock. The whole timeline is planned
first and back-dated so that it ends now: timestamps look like a recording being replayed as fast
as the broker takes it (never in the future). Content is reproducible from the seed; session ids
also depend on `run_id`, so two runs never collide in the same database.

Ground truth (the true basket of every session) goes to a JSON-lines file for the evaluator and
never into the pipeline's inputs.
"""

from __future__ import annotations

import bisect
import heapq
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from cartstream.core.ids import derived_id
from cartstream.core.ids import now_ms as wall_clock_ms
from cartstream.core.settings import TopicSettings
from cartstream.models.catalog import Catalog
from cartstream.models.render import SceneRenderer, covered_lens, encode_jpeg
from cartstream.models.scale import DEFAULT_RATE_HZ, synthesize_weights
from cartstream.models.shopper import ALL_CAMERAS, SessionPlan, ShopperProfile, plan_session
from cartstream.schemas.records import (
    CART_FRAME,
    SESSION_EVENT,
    WEIGHT_PACKET,
    SessionEventKind,
)

CAMERAS = 2
PACKET_SAMPLES = 10  # 200 ms at 50 Hz
IDLE_FRAME_EVERY_S = 10.0
HAND_FRAMES_S = (-0.15, 0.1, 0.35)  # frames around each hand movement (from the hand entering)
SESSION_GAP_S = 3.0


class EventSink(Protocol):
    def send(self, topic: str, key: str, schema: str, record: dict[str, Any]) -> object: ...


@dataclass(frozen=True)
class SimConfig:
    carts: int = 4
    sessions: int = 5  # per cart
    seed: int = 7
    stores: int = 2
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    profile: ShopperProfile = field(default_factory=ShopperProfile)
    rate_hz: float = DEFAULT_RATE_HZ


@dataclass(frozen=True)
class SceneChange:
    """What the cameras see changes from `from_ms` (cart clock) on, for drift scenarios:
    `lighting` scales every frame of `store_id` by `gain`; `packaging` draws `sku` in the
    packaging colours `colors` in every store."""

    kind: Literal["lighting", "packaging"]
    from_ms: int
    store_id: str | None = None
    gain: float = 0.5
    sku: str | None = None
    colors: tuple[str, str] = ("#d81b60", "#fdd835")

    def applies(self, store_id: str, at_ms: int) -> bool:
        return at_ms >= self.from_ms and self.store_id in (None, store_id)


@dataclass(frozen=True)
class PlannedSession:
    cart_id: str
    store_id: str
    session_id: str
    start_ms: int
    plan: SessionPlan
    seed: tuple[int, ...]

    def truth(self, catalog: Catalog) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "cart_id": self.cart_id,
            "store_id": self.store_id,
            "start_ms": self.start_ms,
            "outcome": self.plan.outcome,
            "basket": dict(sorted(self.plan.basket().items())),
            "basket_grams": round(self.plan.basket_grams(), 1),
            "scenarios": sorted(self.plan.scenarios),
            "anomaly": self.plan.anomaly,
            "actions": [
                {
                    "at_s": round(a.at_s, 3),
                    "action": a.action,
                    "sku": a.sku,
                    "quantity": a.quantity,
                    "grams": round(a.grams, 1),
                }
                for a in self.plan.actions
            ],
        }


def plan_carts(
    config: SimConfig, catalog: Catalog, now_ms: int | None = None
) -> list[PlannedSession]:
    """Every session of every cart, with its cart-clock start time (back-dated to end now)."""
    now_ms = now_ms if now_ms is not None else wall_clock_ms()
    planned: list[PlannedSession] = []
    for c in range(config.carts):
        store = f"store-{c % config.stores + 1:03d}"
        cart = f"cart-{store[-3:]}-{c:04d}"
        plans = []
        for s in range(config.sessions):
            seed = (config.seed, c, s)
            plans.append(
                (seed, plan_session(np.random.default_rng(seed), catalog, s, config.profile))
            )
        total_ms = int(sum(p.duration_s + SESSION_GAP_S for _, p in plans) * 1000)
        t = now_ms - total_ms - 2_000
        for s, (seed, plan) in enumerate(plans):
            sid = derived_id("session", config.run_id, config.seed, c, s)
            planned.append(PlannedSession(cart, store, sid, t, plan, seed))
            t += int((plan.duration_s + SESSION_GAP_S) * 1000)
    return planned


# Long on purpose: a session's events in time order (start, each hand movement's frames and
# weight packets, the close), read like the script of what the cart sends.
def _session_events(
    ps: PlannedSession,
    catalog: Catalog,
    topics: TopicSettings,
    rate_hz: float,
    renderer: SceneRenderer,
    changes: Sequence[tuple[SceneChange, SceneRenderer | None]] = (),
) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """(cart time ms, topic, schema, record) for one session, in time order; `changes` with
    the renderer each packaging change draws with."""
    rng = np.random.default_rng((*ps.seed, 1))
    ids: dict[str, Any] = {
        "cart_id": ps.cart_id,
        "store_id": ps.store_id,
        "session_id": ps.session_id,
    }

    def session_event(
        kind: SessionEventKind, at_ms: int, last_w: int, last_f: int
    ) -> dict[str, Any]:
        return {
            "event_id": str(uuid.uuid4()),
            **ids,
            "kind": kind,
            "time_ms": at_ms,
            "last_weight_sequence": last_w,
            "last_frame_sequence": last_f,
        }

    events: list[tuple[int, str, str, dict[str, Any]]] = [
        (
            ps.start_ms,
            topics.sessions,
            SESSION_EVENT,
            dict(session_event("STARTED", ps.start_ms, -1, -1)),
        )
    ]
    samples = synthesize_weights(ps.plan, rng, rate_hz)
    frame_times: list[tuple[float, str | None, int | None, int]] = []
    for a in ps.plan.actions:
        shown = a.shown_sku or a.sku
        frame_times += [(a.at_s + dt, shown, a.hidden_from, a.quantity) for dt in HAND_FRAMES_S]
    t = IDLE_FRAME_EVERY_S / 2
    while t < ps.plan.duration_s:
        frame_times.append((t, None, None, 0))
        t += IDLE_FRAME_EVERY_S
    frame_times.sort(key=lambda x: x[0])
    inside: list[str] = []
    pending = list(ps.plan.actions)
    seq = 0
    frame_ms: list[int] = []  # capture time of frame `seq`, ascending
    for at_s, in_hand, hidden, count in frame_times:
        while pending and pending[0].at_s + pending[0].settle_s <= at_s:
            done = pending.pop(0)
            if done.action == "ADD":
                inside += [done.sku] * done.quantity
            elif done.sku in inside:
                inside.remove(done.sku)
        at_ms = ps.start_ms + int(at_s * 1000)
        now = [c for c in changes if c[0].applies(ps.store_id, at_ms)]
        draw = next((r for c, r in now if r is not None), renderer)
        for cam in range(CAMERAS):
            hand = in_hand if hidden not in (cam, ALL_CAMERAS) else None
            img, _labels = draw.render(rng, cam, hand, inside, max(1, count))
            for change, _ in now:
                if change.kind == "lighting":
                    img = np.clip(img * change.gain, 0, 255).astype(np.uint8)
            dark = ps.plan.dark_camera
            if dark is not None and dark[0] == cam and at_s >= dark[1]:
                img = covered_lens(rng, img.shape)
            frame: dict[str, Any] = {
                "event_id": str(uuid.uuid4()),
                **ids,
                "camera_id": cam,
                "sequence": seq,
                "capture_time_ms": at_ms,
                "width": img.shape[1],
                "height": img.shape[0],
                "jpeg": encode_jpeg(img),
            }
            events.append((at_ms, topics.frames, CART_FRAME, dict(frame)))
            frame_ms.append(at_ms)
            seq += 1
    period = 1000.0 / rate_hz
    last_w = -1
    for w_seq, i in enumerate(range(0, len(samples), PACKET_SAMPLES)):
        chunk = samples[i : i + PACKET_SAMPLES]
        start = ps.start_ms + round(i * period)
        sent_ms = start + round(len(chunk) * period)
        packet: dict[str, Any] = {
            "event_id": str(uuid.uuid4()),
            **ids,
            "sequence": w_seq,
            "start_time_ms": start,
            "sample_rate_hz": rate_hz,
            "samples_g": chunk.tolist(),
            # frames sent before this packet (a frame at the same instant goes after it)
            "last_frame_sequence": bisect.bisect_left(frame_ms, sent_ms) - 1,
        }
        events.append((sent_ms, topics.weights, WEIGHT_PACKET, dict(packet)))
        last_w = w_seq
    # at equal times packets go first, as the barrier above assumes
    events.sort(key=lambda e: (e[0], e[1] != topics.weights))
    end_ms = max(ps.start_ms + int(ps.plan.duration_s * 1000), events[-1][0])
    kind: SessionEventKind = "CHECKOUT_REQUESTED" if ps.plan.outcome == "checkout" else "ABANDONED"
    events.append(
        (end_ms, topics.sessions, SESSION_EVENT, dict(session_event(kind, end_ms, last_w, seq - 1)))
    )
    yield from events


def cart_events(
    sessions: list[PlannedSession],
    catalog: Catalog,
    topics: TopicSettings,
    rate_hz: float,
    changes: Sequence[SceneChange] = (),
) -> Iterator[tuple[int, str, str, str, dict[str, Any]]]:
    """All carts' events merged by cart time: (time ms, topic, key, schema, record); `changes`
    alter what the cameras see (drift scenarios)."""
    renderer = SceneRenderer(catalog)
    drawn = [
        (c, renderer.repackaged(c.sku, c.colors) if c.kind == "packaging" and c.sku else None)
        for c in changes
    ]

    def one_cart(
        cart_sessions: list[PlannedSession],
    ) -> Iterator[tuple[int, str, str, str, dict[str, Any]]]:
        for ps in cart_sessions:
            for at, topic, schema, record in _session_events(
                ps, catalog, topics, rate_hz, renderer, drawn
            ):
                yield at, topic, ps.cart_id, schema, record

    by_cart: dict[str, list[PlannedSession]] = {}
    for ps in sessions:
        by_cart.setdefault(ps.cart_id, []).append(ps)
    yield from heapq.merge(*(one_cart(v) for v in by_cart.values()), key=lambda e: e[0])


@dataclass
class SimulationReport:
    sessions: int
    checkouts_requested: int
    abandoned: int
    events: Counter[str]
    truth_path: Path | None
    seconds: float


def write_truth(sessions: list[PlannedSession], catalog: Catalog, path: Path) -> None:
    """Written whole or not at all (a temporary file renamed into place): a reader that waits for
    the file to exist never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w") as fh:
        for ps in sessions:
            fh.write(json.dumps(ps.truth(catalog)) + "\n")
    partial.replace(path)


def read_truth(path: Path) -> dict[str, dict[str, Any]]:
    with path.open() as fh:
        return {row["session_id"]: row for row in map(json.loads, fh) if row}


def simulate(
    config: SimConfig,
    catalog: Catalog,
    topics: TopicSettings,
    sink: EventSink,
    truth_path: Path | None = None,
    on_event: Any = None,
    speed: float = 0.0,
) -> SimulationReport:
    """Publish every planned event through `sink`; write ground truth first.

    `speed` > 0 paces publishing at that multiple of real time (20: a minute of shopping in
    3 s); 0 publishes as fast as the sink takes events.
    """
    started = time.monotonic()
    sessions = plan_carts(config, catalog)
    if truth_path is not None:
        write_truth(sessions, catalog, truth_path)
    counts: Counter[str] = Counter()
    first_ms: int | None = None
    for at_ms, topic, key, schema, record in cart_events(sessions, catalog, topics, config.rate_hz):
        if speed > 0:
            first_ms = at_ms if first_ms is None else first_ms
            delay = started + (at_ms - first_ms) / 1000.0 / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sink.send(topic, key, schema, record)
        counts[topic] += 1
        if on_event is not None:
            on_event(topic, counts)
    requested = sum(1 for s in sessions if s.plan.outcome == "checkout")
    return SimulationReport(
        len(sessions),
        requested,
        len(sessions) - requested,
        counts,
        truth_path,
        time.monotonic() - started,
    )
