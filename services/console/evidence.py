"""A checkout's evidence for the review page: each basket change with its camera frames (the
detector's boxes on them) and the weight trace around its step.

Read from the broker when a reviewer opens a checkout: the cart's partition (carts key every
stream by cart id; Kafka's default murmur2 partitioner) of `basket.changes`, `cart.detections`,
`cart.frames` and `cart.weights`, from `console.evidence_lookback_s` before the checkout was
asked for (by the broker's time index; a broker without one is read from the start), filtered to
the session, kept for the next look (LRU). What the broker no longer holds (retention, or older
than the look-back) is shown as missing, never invented.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from kafka.partitioner.default import murmur2

from cartstream.core.settings import Settings
from cartstream.schemas.records import STEP_ACTIONS
from cartstream.services.kafka.tail import read_topic

MARGIN_BEFORE_MS = 2_000  # weight samples shown before a step starts ...
MARGIN_AFTER_MS = 1_500  # ... and after it settles
CACHED_SESSIONS = 32


def cart_partition(cart_id: str, partitions: int) -> int:
    """The partition a cart's records go to (Kafka's default partitioner on the key)."""
    return int(murmur2(cart_id.encode()) & 0x7FFFFFFF) % partitions


@dataclass
class Frame:
    event_id: str
    camera_id: int
    capture_time_ms: int
    jpeg: bytes | None = None
    boxes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ChangeEvidence:
    change: dict[str, Any]
    frames: list[Frame]
    weights: list[tuple[int, float]]  # (time ms, grams) from the step's start - margin to end

    @property
    def missing_frames(self) -> int:
        return sum(1 for f in self.frames if f.jpeg is None)


@dataclass
class SessionEvidence:
    session_id: str
    changes: list[ChangeEvidence]

    def frame(self, event_id: str) -> Frame | None:
        for change in self.changes:
            for f in change.frames:
                if f.event_id == event_id:
                    return f
        return None


class EvidenceReader:
    def __init__(self, settings: Settings, idle_s: float = 1.0) -> None:
        self.settings = settings
        self.idle_s = idle_s
        self._cache: OrderedDict[str, SessionEvidence] = OrderedDict()
        self._lock = threading.Lock()

    def session(
        self, cart_id: str, session_id: str, until_ms: int | None = None
    ) -> SessionEvidence:
        """The session's step changes with their frames and weights (blocking: run in a thread).
        `until_ms`: when the session ended (its checkout request), to read from look-back
        before it rather than from each partition's start."""
        with self._lock:
            if session_id in self._cache:
                self._cache.move_to_end(session_id)
                return self._cache[session_id]
        since = None
        if until_ms is not None:
            since = until_ms - int(self.settings.console.evidence_lookback_s * 1000)
        evidence = self._read(cart_id, session_id, since)
        with self._lock:
            self._cache[session_id] = evidence
            while len(self._cache) > CACHED_SESSIONS:
                self._cache.popitem(last=False)
        return evidence

    def _records(
        self, topic: str, cart_id: str, session_id: str, since_ms: int | None
    ) -> list[dict[str, Any]]:
        part = [cart_partition(cart_id, self.settings.topics.stream_partitions)]
        records = read_topic(
            self.settings, topic, idle_timeout_s=self.idle_s, partitions=part, since_ms=since_ms
        )
        return [r for r, _ in records if r.get("session_id") == session_id]

    def _read(self, cart_id: str, session_id: str, since_ms: int | None) -> SessionEvidence:
        t = self.settings.topics
        changes = sorted(
            (c for c in self._records(t.basket_changes, cart_id, session_id, since_ms)),
            key=lambda c: c["seq"],
        )
        changes = list({c["seq"]: c for c in changes if c["action"] in STEP_ACTIONS}.values())
        wanted = {fid for c in changes for fid in c.get("frame_event_ids") or []}
        frames: dict[str, Frame] = {}
        for det in self._records(t.detections, cart_id, session_id, since_ms):
            if det["frame_event_id"] in wanted:
                frames[det["frame_event_id"]] = Frame(
                    det["frame_event_id"],
                    det["camera_id"],
                    det["capture_time_ms"],
                    boxes=list(det["boxes"]),
                )
        for raw in self._records(t.frames, cart_id, session_id, since_ms):
            if raw["event_id"] in wanted:
                frame = frames.setdefault(
                    raw["event_id"],
                    Frame(raw["event_id"], raw["camera_id"], raw["capture_time_ms"]),
                )
                frame.jpeg = raw["jpeg"]
        samples: list[tuple[int, float]] = []
        for packet in self._records(t.weights, cart_id, session_id, since_ms):
            step_ms = 1000.0 / float(packet["sample_rate_hz"])
            start = int(packet["start_time_ms"])
            samples += [
                (start + round(i * step_ms), float(g)) for i, g in enumerate(packet["samples_g"])
            ]
        samples = sorted(set(samples))
        return SessionEvidence(
            session_id,
            [
                ChangeEvidence(
                    change,
                    [
                        frames.get(fid) or Frame(fid, -1, 0)
                        for fid in change.get("frame_event_ids") or []
                    ],
                    [
                        s
                        for s in samples
                        if change["step_start_ms"] - MARGIN_BEFORE_MS
                        <= s[0]
                        <= change["step_end_ms"] + MARGIN_AFTER_MS
                    ],
                )
                for change in changes
            ],
        )
