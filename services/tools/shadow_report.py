"""The online comparison of a shadow deployment: what the candidate detector said beside the
champion on the same frames (`cart.detections.shadow`, written by the detect stage when
`detect.shadow_version` is set).

Per frame the SKUs each model found at or above the operating threshold are compared as sets:
agreement is the share of frames where the sets are equal; a confusion is a frame whose best
box names different SKUs. Where a person verified a frame (the `labels.jsonl` of an exported
review queue, rows with `verified: true`), each model is scored against the verified SKUs.
Latency is each model's inference time per frame of the batches it ran.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cartstream.schemas.records import DetectionBox, ShadowDetection


@dataclass
class ShadowReport:
    frames: int = 0
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)  # champion -> candidate
    agreements: int = 0
    confusions: Counter[tuple[str, str]] = field(default_factory=Counter)
    verified: int = 0
    champion_right: int = 0
    candidate_right: int = 0
    champion_ms: list[float] = field(default_factory=list)
    candidate_ms: list[float] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agreements / self.frames if self.frames else 0.0

    def as_dict(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            return round(float(np.percentile(values, q)), 3) if values else None

        return {
            "frames": self.frames,
            "models": [
                {"champion": a, "candidate": b, "frames": n} for (a, b), n in self.pairs.items()
            ],
            "agreement": round(self.agreement, 4),
            "confusions": [
                {"champion": a, "candidate": b, "frames": n}
                for (a, b), n in self.confusions.most_common(10)
            ],
            "verified_frames": self.verified,
            "champion_accuracy_on_verified": (
                round(self.champion_right / self.verified, 4) if self.verified else None
            ),
            "candidate_accuracy_on_verified": (
                round(self.candidate_right / self.verified, 4) if self.verified else None
            ),
            "champion_ms_p50_p99": [pct(self.champion_ms, 50), pct(self.champion_ms, 99)],
            "candidate_ms_p50_p99": [pct(self.candidate_ms, 50), pct(self.candidate_ms, 99)],
        }


def skus(boxes: Sequence[DetectionBox], threshold: float) -> frozenset[str]:
    return frozenset(b["sku"] for b in boxes if b["score"] >= threshold)


def _best(boxes: Sequence[DetectionBox], threshold: float) -> str:
    kept = [b for b in boxes if b["score"] >= threshold]
    return max(kept, key=lambda b: b["score"])["sku"] if kept else "(nothing)"


def compare(
    records: Iterable[ShadowDetection],
    verified: Mapping[str, frozenset[str]],
    threshold: float,
) -> ShadowReport:
    """The report over shadow records (a frame seen twice, re-delivered, counts once)."""
    report = ShadowReport()
    seen: set[str] = set()
    for r in records:
        if r["event_id"] in seen:
            continue
        seen.add(r["event_id"])
        report.frames += 1
        report.pairs[(r["champion_version"], r["candidate_version"])] += 1
        champion = skus(r["champion_boxes"], threshold)
        candidate = skus(r["candidate_boxes"], threshold)
        report.agreements += champion == candidate
        best = (_best(r["champion_boxes"], threshold), _best(r["candidate_boxes"], threshold))
        if best[0] != best[1]:
            report.confusions[best] += 1
        truth = verified.get(r["frame_event_id"])
        if truth is not None:
            report.verified += 1
            report.champion_right += champion == truth
            report.candidate_right += candidate == truth
        report.champion_ms.append(float(r["champion_ms"]))
        report.candidate_ms.append(float(r["candidate_ms"]))
    return report


def verified_labels(folders: Iterable[Path]) -> dict[str, frozenset[str]]:
    """frame_event_id -> the SKUs a person verified, from exported review queues."""
    labels: dict[str, frozenset[str]] = {}
    for folder in folders:
        path = folder / "labels.jsonl"
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("verified"):
                labels[row["frame_event_id"]] = frozenset(b["sku"] for b in row.get("boxes", []))
    return labels
