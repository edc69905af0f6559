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
from typing import Any

import numpy as np

from cartstream.models.catalog import Catalog
from cartstream.schemas.records import Detection

Sighting = list[Any]  # [capture_ms, [[sku index, score], ...], boxes in hand] (JSON-friendly)


def sighting(detection: Detection, catalog: Catalog, zone_y: float) -> Sighting:
    """The frame's time, [[sku index, best score], ...] of the boxes whose centre lies in the
    hand zone, and how many such boxes there are (units held at once)."""
    best: dict[int, float] = {}
    count = 0
    for box in detection["boxes"]:
        if (box["y0"] + box["y1"]) / 2 >= zone_y or box["sku"] not in catalog:
            continue
        k = catalog.index(box["sku"])
        best[k] = max(best.get(k, 0.0), float(box["score"]))
        count += 1
    return [detection["capture_time_ms"], [[k, s] for k, s in sorted(best.items())], count]


class FrameLedger:
    """Operations on the `vision` part of a session's state (a plain dict, so it serialises):

    mark      every frame sequence <= mark has its detection
    above     sequences > mark already received (out of order: two detect batches in flight)
    sightings one entry per frame received, by capture time
    """

    @staticmethod
    def new() -> dict[str, Any]:
        return {"mark": -1, "above": [], "sightings": []}

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
        return True

    @staticmethod
    def covers(ledger: Mapping[str, Any], barrier: int) -> bool:
        return bool(ledger["mark"] >= barrier)

    @staticmethod
    def evidence(
        ledger: Mapping[str, Any], start_ms: int, end_ms: int, size: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """[F, size] in-hand scores and [F] in-hand box counts of the F frames in
        [start_ms, end_ms] that saw an item in hand (a frame that saw none, an occluded camera
        say, tells nothing and is left out); None when no frame was captured in the window."""
        rows: list[np.ndarray] = []
        counts: list[int] = []
        seen = False
        for capture_ms, boxes, count in ledger["sightings"]:
            if start_ms <= capture_ms <= end_ms:
                seen = True
                if boxes:
                    row = np.zeros(size)
                    for k, score in boxes:
                        row[int(k)] = float(score)
                    rows.append(row)
                    counts.append(int(count))
        if not seen:
            return None
        if not rows:
            return np.zeros((0, size)), np.zeros(0)
        return np.stack(rows), np.asarray(counts, dtype=float)

    @staticmethod
    def forget_before(ledger: dict[str, Any], capture_ms: int) -> None:
        """Drop sightings no future step can use (steps come in time order)."""
        ledger["sightings"] = [s for s in ledger["sightings"] if s[0] >= capture_ms]
