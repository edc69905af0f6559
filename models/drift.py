"""Drift: do the frames a store's cameras send still look like the frames the detector was
calibrated on?

Each detection is one observation of its frame: grey-level brightness and contrast, the best
box score (0: nothing found), the boxes in the hand zone, and each box's SKU and score. Per
scope, a sliding window of the last `window` observations is binned and compared with the
reference distribution by the population stability index,

    PSI = sum over bins of (p_live - p_ref) * ln(p_live / p_ref)   (proportions floored at 1e-3)

which reads < 0.1 stable, 0.1-0.25 moderate, > 0.25 a significant shift. Scopes: a store's
camera for the frame features (a lighting change shows in brightness and contrast, then in
confidence), a SKU for its boxes' scores (a SKU the detector grows unsure of). A SKU whose
packaging changed completely is not seen at all, so its boxes' scores cannot show it: fusion's
vision-weight disagreement per SKU does (`vision_drift.py`, its honest rates kept in the same
reference file).

A scope drifts when its window holds at least `min_samples` and its PSI reaches `alert_psi` on
an `ALERTING` feature. The reference is the same features over honest simulated shopping,
built by `cartstream models drift-reference` and kept beside the model (`<model>.drift.json`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cartstream.models.vision_drift import VisionReference

FLOOR = 1e-3
EDGES: dict[str, np.ndarray] = {
    "brightness": np.array([0, 40, 60, 70, 80, 90, 100, 110, 120, 140, 256], np.float64),
    "contrast": np.array([0, 20, 30, 35, 40, 45, 50, 55, 60, 70, np.inf], np.float64),
    "confidence": np.array([0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, np.inf], np.float64),
    "in_hand": np.array([0, 1, 2, 3, np.inf], np.float64),
    "sku_confidence": np.array([0, 0.7, 0.9, np.inf], np.float64),
}
MIN_REFERENCE_BOXES = 200  # a SKU with fewer boxes in the reference is not monitored
FRAME_FEATURES = ("brightness", "contrast", "confidence", "in_hand")
# what may alert: contrast is tracked, but it moves with how full the baskets in view are
# (honest runs read PSI up to 0.56 on it; docs/drift.md), so it only explains an alert
ALERTING = frozenset({"brightness", "confidence", "in_hand", "sku_confidence"})


@dataclass(frozen=True)
class Observation:
    """One frame's detection as drift monitoring sees it."""

    store_id: str
    camera_id: int
    brightness: float
    contrast: float
    best_score: float
    in_hand: int
    boxes: Sequence[tuple[str, float]] = ()  # (sku, score) of every box

    @classmethod
    def of_detection(cls, detection: Mapping[str, Any], hand_zone_y: float) -> Observation:
        """A Detection record (schemas/avro/detection.v2.avsc) as an observation; a box whose
        centre is above `hand_zone_y` is in the shopper's hand (reason's rule)."""
        boxes = list(detection["boxes"])
        return cls(
            str(detection["store_id"]),
            int(detection["camera_id"]),
            float(detection["brightness"]),
            float(detection["contrast"]),
            max((float(b["score"]) for b in boxes), default=0.0),
            sum((float(b["y0"]) + float(b["y1"])) / 2 < hand_zone_y for b in boxes),
            tuple((str(b["sku"]), float(b["score"])) for b in boxes),
        )

    def frame_values(self) -> dict[str, float]:
        return {
            "brightness": self.brightness,
            "contrast": self.contrast,
            "confidence": self.best_score,
            "in_hand": float(self.in_hand),
        }


def bin_of(feature: str, value: float) -> int:
    edges = EDGES[feature]
    index = int(np.searchsorted(edges, value, side="right")) - 1
    return min(max(index, 0), len(edges) - 2)


def psi(reference: np.ndarray, counts: np.ndarray) -> float:
    """PSI of observed bin `counts` against `reference` proportions."""
    live = np.maximum(counts / max(counts.sum(), 1), FLOOR)
    ref = np.maximum(reference, FLOOR)
    return float(np.sum((live - ref) * np.log(live / ref)))


@dataclass(frozen=True)
class DriftReference:
    """Reference proportions per frame feature, and per SKU for its boxes' scores; with the
    honest vision-weight disagreement per SKU when the reference run went through fusion."""

    features: dict[str, list[float]]
    skus: dict[str, list[float]]
    frames: int
    source: str
    vision: VisionReference | None = None

    @classmethod
    def from_observations(cls, observations: Iterable[Observation], source: str) -> DriftReference:
        counts = {f: np.zeros(len(EDGES[f]) - 1) for f in FRAME_FEATURES}
        skus: dict[str, np.ndarray] = {}
        frames = 0
        for obs in observations:
            frames += 1
            for feature, value in obs.frame_values().items():
                counts[feature][bin_of(feature, value)] += 1
            for sku, score in obs.boxes:
                bins = skus.setdefault(sku, np.zeros(len(EDGES["sku_confidence"]) - 1))
                bins[bin_of("sku_confidence", score)] += 1
        if not frames:
            raise ValueError("a drift reference needs observations")
        return cls(
            {f: _proportions(c) for f, c in counts.items()},
            {s: _proportions(c) for s, c in sorted(skus.items()) if c.sum() >= MIN_REFERENCE_BOXES},
            frames,
            source,
        )

    def save(self, path: Path) -> None:
        data: dict[str, Any] = {"frames": self.frames, "source": self.source}
        data.update(edges=_edges_json(), features=self.features, skus=self.skus)
        if self.vision is not None:
            data["vision"] = self.vision.counts
        path.write_text(json.dumps(data))

    @classmethod
    def load(cls, path: Path) -> DriftReference:
        data = json.loads(path.read_text())
        if data.get("edges") != _edges_json():
            raise ValueError(
                f"{path}: made with other bins; run `cartstream models drift-reference`"
            )
        vision = VisionReference(data["vision"]) if "vision" in data else None
        return cls(data["features"], data["skus"], int(data["frames"]), str(data["source"]), vision)


def find_reference(explicit: Path | None, model: Path | None, bundled: Path) -> Path | None:
    """The reference to use: `explicit` (a setting), else the file beside the model in use,
    else the bundled model's (the same cameras and catalog); None when none is there."""
    candidates = [explicit, model.with_suffix(".drift.json") if model is not None else None]
    candidates.append(bundled.with_suffix(".drift.json"))
    return next((p for p in candidates if p is not None and p.is_file()), None)


def _proportions(counts: np.ndarray) -> list[float]:
    return [round(float(x), 6) for x in counts / max(counts.sum(), 1)]


def _edges_json() -> dict[str, list[float | str]]:
    return {f: [float(x) if np.isfinite(x) else "inf" for x in e] for f, e in EDGES.items()}


Scope = tuple[str, ...]  # ("store", store_id, camera) or ("sku", sku)


@dataclass(frozen=True)
class DriftReading:
    scope: Scope
    feature: str
    psi: float
    samples: int
    drifting: bool

    def attributes(self) -> dict[str, str]:
        if self.scope[0] == "store":
            where = {"store": self.scope[1], "camera": self.scope[2]}
        else:
            where = {"sku": self.scope[1]}
        return {"scope": self.scope[0], "feature": self.feature, **where}


@dataclass
class _Window:
    size: int
    bins: deque[int] = field(default_factory=deque)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, index: int, n_bins: int) -> None:
        if not self.counts.size:
            self.counts = np.zeros(n_bins)
        self.bins.append(index)
        self.counts[index] += 1
        if len(self.bins) > self.size:
            self.counts[self.bins.popleft()] -= 1


class DriftMonitor:
    """Sliding windows per scope and feature, read as PSI against the reference."""

    def __init__(
        self,
        reference: DriftReference,
        window: int = 480,
        min_samples: int = 240,
        alert_psi: float = 0.25,
    ) -> None:
        if min_samples > window:
            raise ValueError("min_samples cannot exceed the window")
        self.reference = reference
        self.window, self.min_samples, self.alert_psi = window, min_samples, alert_psi
        self._windows: dict[tuple[Scope, str], _Window] = {}

    def observe(self, obs: Observation) -> None:
        scope: Scope = ("store", obs.store_id, str(obs.camera_id))
        for feature, value in obs.frame_values().items():
            self._add(scope, feature, bin_of(feature, value))
        for sku, score in obs.boxes:
            if sku in self.reference.skus:
                self._add(("sku", sku), "sku_confidence", bin_of("sku_confidence", score))

    def _add(self, scope: Scope, feature: str, index: int) -> None:
        window = self._windows.get((scope, feature))
        if window is None:
            window = self._windows[(scope, feature)] = _Window(self.window)
        window.add(index, len(EDGES[feature]) - 1)

    def readings(self) -> list[DriftReading]:
        """Every scope and feature with at least `min_samples` in its window."""
        out = []
        for (scope, feature), window in sorted(self._windows.items()):
            if len(window.bins) < self.min_samples:
                continue
            ref = (
                self.reference.skus[scope[1]]
                if feature == "sku_confidence"
                else self.reference.features[feature]
            )
            value = psi(np.asarray(ref), window.counts)
            drifting = feature in ALERTING and value >= self.alert_psi
            out.append(DriftReading(scope, feature, value, len(window.bins), drifting))
        return out
