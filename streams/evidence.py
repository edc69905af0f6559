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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cartstream.models.catalog import Catalog
from cartstream.schemas.records import Detection

Sighting = list[Any]  # see `sighting` (a JSON-friendly list, kept in the stage's table)

# a frame darker or flatter than this shows nothing (covered lens, failed sensor)
MIN_BRIGHTNESS = 20.0
MIN_CONTRAST = 3.0
MISSING_AFTER_FRAMES = 2  # a camera silent while another sent this many frames has failed


def usable(detection: Detection) -> bool:
    brightness, contrast = float(detection["brightness"]), float(detection["contrast"])
    if brightness < 0 or contrast < 0:  # a v1 detection: not measured, assume fine
        return True
    return brightness >= MIN_BRIGHTNESS and contrast >= MIN_CONTRAST


def sighting(
    detection: Detection, catalog: Catalog, zone_y: float, traceparent: str = ""
) -> Sighting:
    """[capture ms, [[sku index, best score], ...] of the boxes whose centre lies in the hand
    zone, how many such boxes (units held at once), camera id, usable (not dark or uniform),
    frame event id, the trace context of the detection (a basket change links to it)]."""
    best: dict[int, float] = {}
    count = 0
    for box in detection["boxes"]:
        if (box["y0"] + box["y1"]) / 2 >= zone_y or box["sku"] not in catalog:
            continue
        k = catalog.index(box["sku"])
        best[k] = max(best.get(k, 0.0), float(box["score"]))
        count += 1
    return [
        detection["capture_time_ms"],
        [[k, s] for k, s in sorted(best.items())],
        count,
        int(detection["camera_id"]),
        usable(detection),
        detection["frame_event_id"],
        traceparent,
    ]


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


class FrameLedger:
    """Operations on the `vision` part of a session's state (a plain dict, so it serialises):

    mark      every frame sequence <= mark has its detection
    above     sequences > mark already received (out of order: two detect batches in flight)
    sightings one entry per frame received, by capture time
    cameras   every camera that sent a frame in this session
    """

    @staticmethod
    def new() -> dict[str, Any]:
        return {"mark": -1, "above": [], "sightings": [], "cameras": []}

    @staticmethod
    def note(ledger: dict[str, Any], sequence: int, sighting: Sighting) -> bool:
        """Record one frame's detection; False when it was already recorded (re-delivery)."""
        if sequence <= ledger["mark"] or sequence in ledger["above"]:
            return False
        above = sorted([*ledger["above"], sequence])
        mark = ledger["mark"]
        while above and above[0] == mark + 1:
            mark = above.pop(0)
        ledger["mark"], ledger["above"] = mark, above
        ledger["sightings"].append(sighting)
        cameras = ledger["cameras"]
        if sighting[3] not in cameras:
            cameras.append(sighting[3])
            cameras.sort()
        return True

    @staticmethod
    def covers(ledger: Mapping[str, Any], barrier: int) -> bool:
        return bool(ledger["mark"] >= barrier)

    @staticmethod
    def window(ledger: Mapping[str, Any], start_ms: int, end_ms: int, size: int) -> Window | None:
        """The frames captured in [start_ms, end_ms]; None when there were none. Only usable
        frames that saw an item in hand give scores (a camera that saw none, because the
        shopper was in its way, tells nothing and is left out)."""
        inside = [s for s in ledger["sightings"] if start_ms <= s[0] <= end_ms]
        if not inside:
            return None
        rows: list[np.ndarray] = []
        counts: list[int] = []
        cameras: set[int] = set()
        for _, boxes, count, camera, fine, *_ in inside:
            if not fine:
                continue
            cameras.add(int(camera))
            if boxes:
                row = np.zeros(size)
                for k, score in boxes:
                    row[int(k)] = float(score)
                rows.append(row)
                counts.append(int(count))
        return Window(
            np.stack(rows) if rows else np.zeros((0, size)),
            np.asarray(counts, dtype=float),
            sum(1 for e in inside if e[4]),
            tuple(sorted(cameras)),
            tuple(int(e[3]) for e in inside),
            tuple(str(e[5]) for e in inside),
            tuple(str(e[6]) for e in inside if e[6]),
        )

    @staticmethod
    def blind_cameras(ledger: Mapping[str, Any], window: Window | None) -> list[int]:
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
            for c in ledger["cameras"]
            if c not in window.cameras and (c in sent or busiest >= MISSING_AFTER_FRAMES)
        ]

    @staticmethod
    def forget_before(ledger: dict[str, Any], capture_ms: int) -> None:
        """Drop sightings no future step can use (steps come in time order)."""
        ledger["sightings"] = [s for s in ledger["sightings"] if s[0] >= capture_ms]
