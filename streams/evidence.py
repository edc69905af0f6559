"""What the cameras saw around a weight step, kept per session inside reason's state.

Detections reach reason on `cart.detections` (co-partitioned with the weights by cart), later
than the weight packets: they go through the detect stage first. Two things make a decision on
them deterministic:

- a **barrier**: every weight packet names the last frame the cart sent before it
  (`last_frame_sequence`), so a step completed by that packet is decided only once the
  detections of all frames up to there have arrived (`FrameLedger.covers`). Every frame captured
  in the step's window was sent before the packet that completed the step, so the evidence never
  depends on which arrived first. Frames whose detection never comes (a frame dead-lettered by
  detect) hold a step at most `reason.vision_wait_s`;
- a **window**: only frames captured from `window_before_ms` before the step started to
  `window_after_ms` after it settled count, and only boxes in the hand zone (the upper part of
  the view, where an item entering or leaving the basket is; items lying in the basket are
  below).

The evidence is the in-hand box scores of every camera frame in the window that saw an item in
hand (the fusion multiplies the frames' likelihoods); a camera that saw nothing, because the
shopper was in its way, costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from cartstream.models.catalog import Catalog
from cartstream.schemas.records import Detection

# a frame darker or flatter than this shows nothing (covered lens, failed sensor)
MIN_BRIGHTNESS = 20.0
MIN_CONTRAST = 3.0
MISSING_AFTER_FRAMES = 2  # a camera silent while another sent this many frames has failed


class Sighting(NamedTuple):
    """One frame's detection as reason keeps it (stored as a JSON list, in this order)."""

    capture_ms: int
    boxes: list[tuple[int, float]]  # (SKU index, best score) of the boxes in the hand zone
    in_hand: int  # boxes in the hand zone: units held at once
    camera: int
    usable: bool  # not dark, not uniform
    frame_event_id: str
    traceparent: str = ""  # the detection's trace context (a basket change links to it)


def usable(detection: Detection) -> bool:
    brightness, contrast = float(detection["brightness"]), float(detection["contrast"])
    if brightness < 0 or contrast < 0:  # a v1 detection: not measured, assume fine
        return True
    return brightness >= MIN_BRIGHTNESS and contrast >= MIN_CONTRAST


def sighting(
    detection: Detection, catalog: Catalog, zone_y: float, traceparent: str = ""
) -> Sighting:
    """What reason keeps of a detection: the best score per SKU of the boxes whose centre lies
    in the hand zone, and how many such boxes there were."""
    best: dict[int, float] = {}
    count = 0
    for box in detection["boxes"]:
        if (box["y0"] + box["y1"]) / 2 >= zone_y or box["sku"] not in catalog:
            continue
        k = catalog.index(box["sku"])
        best[k] = max(best.get(k, 0.0), float(box["score"]))
        count += 1
    return Sighting(
        detection["capture_time_ms"],
        sorted(best.items()),
        count,
        int(detection["camera_id"]),
        usable(detection),
        detection["frame_event_id"],
        traceparent,
    )


@dataclass(frozen=True)
class Window:
    """What the cameras saw in one step's window."""

    scores: np.ndarray  # [F, K] in-hand scores of the F usable frames that saw a hand
    counts: np.ndarray  # [F] boxes in hand in each of those frames
    frames: int  # usable frames captured in the window (not dark, not uniform)
    cameras: tuple[int, ...]  # cameras with at least one usable frame in the window
    senders_by_frame: tuple[int, ...]  # the camera of every frame in the window
    frame_ids: tuple[str, ...]  # every frame in the window
    frame_traces: tuple[str, ...] = ()  # their detections' trace contexts (those known)


@dataclass
class FrameLedger:
    """The frames of a session that reason has the detections of (part of its state).

    Invariants: every frame sequence <= `mark` has its detection; `above` holds the sequences
    > mark already received (out of order: two detect batches in flight); `sightings` has one
    entry per frame received; `cameras` every camera that sent a frame in this session.
    """

    mark: int = -1
    above: list[int] = field(default_factory=list)
    sightings: list[Sighting] = field(default_factory=list)
    cameras: list[int] = field(default_factory=list)

    def note(self, sequence: int, seen: Sighting) -> bool:
        """Record one frame's detection; False when it was already recorded (re-delivery)."""
        if sequence <= self.mark or sequence in self.above:
            return False
        above = sorted([*self.above, sequence])
        mark = self.mark
        while above and above[0] == mark + 1:
            mark = above.pop(0)
        self.mark, self.above = mark, above
        self.sightings.append(seen)
        if seen.camera not in self.cameras:
            self.cameras.append(seen.camera)
            self.cameras.sort()
        return True

    def covers(self, barrier: int) -> bool:
        return self.mark >= barrier

    def window(self, start_ms: int, end_ms: int, size: int) -> Window | None:
        """The frames captured in [start_ms, end_ms]; None when there were none. Only usable
        frames that saw an item in hand give scores (a camera that saw none, because the
        shopper was in its way, tells nothing and is left out)."""
        inside = [s for s in self.sightings if start_ms <= s.capture_ms <= end_ms]
        if not inside:
            return None
        rows: list[np.ndarray] = []
        counts: list[int] = []
        cameras: set[int] = set()
        for s in inside:
            if not s.usable:
                continue
            cameras.add(s.camera)
            if s.boxes:
                row = np.zeros(size)
                for k, score in s.boxes:
                    row[int(k)] = float(score)
                rows.append(row)
                counts.append(s.in_hand)
        return Window(
            np.stack(rows) if rows else np.zeros((0, size)),
            np.asarray(counts, dtype=float),
            sum(1 for s in inside if s.usable),
            tuple(sorted(cameras)),
            tuple(s.camera for s in inside),
            tuple(s.frame_event_id for s in inside),
            tuple(s.traceparent for s in inside if s.traceparent),
        )

    def blind_cameras(self, window: Window | None) -> list[int]:
        """Cameras that failed in the window: they sent only dark or uniform frames, or none
        while another camera sent a hand movement's worth. (Carts send frames when something
        moves in view, so a window with no frame, or one idle frame, is normal.)"""
        if window is None:
            return []
        sent: dict[int, int] = {}
        for camera in window.senders_by_frame:
            sent[camera] = sent.get(camera, 0) + 1
        busiest = max(sent.values(), default=0)
        return [
            c
            for c in self.cameras
            if c not in window.cameras and (c in sent or busiest >= MISSING_AFTER_FRAMES)
        ]

    def forget_before(self, capture_ms: int) -> None:
        """Drop sightings no future step can use (steps come in time order)."""
        self.sightings = [s for s in self.sightings if s.capture_ms >= capture_ms]
