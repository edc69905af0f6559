"""The review loop: alerts and unsure basket changes, with their frames, as a labelling queue.

`cartstream review export --out DIR` reads `anomalies`, `basket.changes` (confidence below a
threshold) and `cart.review-frames` (frames the detector was unsure of), fetches the JPEG of
every frame they name from `cart.frames`, and writes

    DIR/images/<frame_event_id>.jpg
    DIR/labels.jsonl     one line per image: why it is there, the detector's boxes as
                         pre-labels, and `verified: false`

A person checks the boxes (fixes `boxes`, sets `verified: true`), or labels the frames in
`cartstream console` and `cartstream review labels --out DIR` writes the verified ones;
`cartstream models train-detector --extra DIR` then trains on the verified images beside the
rendered scenes (`models/dataset.py`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cartstream.core.settings import Settings
from cartstream.schemas.records import STEP_ACTIONS
from cartstream.services.kafka.tail import read_topic
from cartstream.services.storage.reviews import ReviewStore


@dataclass
class ReviewItem:
    frame_event_id: str
    reasons: list[str] = field(default_factory=list)
    hint_sku: str | None = None  # what the pipeline decided moved in this frame's step


@dataclass(frozen=True)
class ExportReport:
    items: int
    images: int
    missing_frames: int
    out: Path


def collect(settings: Settings, min_confidence: float, idle_s: float) -> dict[str, ReviewItem]:
    """frame event id -> why it needs a label."""
    items: dict[str, ReviewItem] = {}

    def item(frame_id: str) -> ReviewItem:
        return items.setdefault(frame_id, ReviewItem(frame_id))

    for alert, _ in read_topic(settings, settings.topics.anomalies, idle_timeout_s=idle_s):
        for frame_id in alert.get("frame_event_ids") or []:
            item(frame_id).reasons.append(f"{alert['kind']}: {alert['description']}")
    for change, _ in read_topic(settings, settings.topics.basket_changes, idle_timeout_s=idle_s):
        if change["action"] not in STEP_ACTIONS:
            continue
        if change["confidence"] >= min_confidence:
            continue
        for frame_id in change.get("frame_event_ids") or []:
            entry = item(frame_id)
            entry.reasons.append(
                f"unsure basket change: {change['action']} {change['sku']} "
                f"(confidence {change['confidence']:.2f})"
            )
            entry.hint_sku = entry.hint_sku or change["sku"]
    for frame, _ in read_topic(settings, settings.topics.review_frames, idle_timeout_s=idle_s):
        item(frame["frame_event_id"]).reasons.append(frame["reason"])
    return items


def export_review(
    settings: Settings, out: Path, min_confidence: float = 0.8, idle_s: float = 2.0
) -> ExportReport:
    items = collect(settings, min_confidence, idle_s)
    (out / "images").mkdir(parents=True, exist_ok=True)
    boxes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for det, _ in read_topic(settings, settings.topics.detections, idle_timeout_s=idle_s):
        if det["frame_event_id"] in items:
            boxes[det["frame_event_id"]] = det["boxes"]
    written = 0
    with (out / "labels.jsonl").open("w") as fh:
        for frame, _ in read_topic(settings, settings.topics.frames, idle_timeout_s=idle_s):
            entry = items.get(frame["event_id"])
            if entry is None:
                continue
            name = f"images/{frame['event_id']}.jpg"
            (out / name).write_bytes(frame["jpeg"])
            row = {
                "image": name,
                "frame_event_id": frame["event_id"],
                "cart_id": frame["cart_id"],
                "session_id": frame["session_id"],
                "camera_id": frame["camera_id"],
                "capture_time_ms": frame["capture_time_ms"],
                "reasons": entry.reasons,
                "hint_sku": entry.hint_sku,
                "boxes": [
                    {k: b[k] for k in ("sku", "x0", "y0", "x1", "y1")} | {"score": b["score"]}
                    for b in boxes.get(frame["event_id"], [])
                ],
                "verified": False,
            }
            fh.write(json.dumps(row) + "\n")
            written += 1
    return ExportReport(len(items), written, len(items) - written, out)


@dataclass(frozen=True)
class LabelExport:
    frames: int  # written, verified
    unboxed: int  # a SKU named but no box to put it in (the detector drew none): left out
    out: Path


def export_labels(repo: ReviewStore, out: Path) -> LabelExport:
    """The console's verified labels (latest per frame) as a folder `train-detector --extra`
    reads: DIR/images/<frame>.jpg and DIR/labels.jsonl with `verified: true`. A frame marked
    EMPTY is a negative (no boxes); a SKU without a box cannot teach where the item is, so it
    is counted and left out."""
    latest = {label.frame_event_id: label for label in repo.labels()}
    (out / "images").mkdir(parents=True, exist_ok=True)
    written = unboxed = 0
    with (out / "labels.jsonl").open("w") as fh:
        for frame_id, label in sorted(latest.items()):
            if label.sku is not None and not label.boxes:
                unboxed += 1
                continue
            name = f"images/{frame_id}.jpg"
            (out / name).write_bytes(label.jpeg)
            row = {
                "image": name,
                "frame_event_id": frame_id,
                "cart_id": label.cart_id,
                "session_id": label.session_id,
                "camera_id": label.camera_id,
                "capture_time_ms": label.capture_time_ms,
                "reasons": [f"console label {label.verdict} by {label.staff}"],
                "hint_sku": label.predicted_sku,
                "boxes": label.boxes,
                "verified": True,
            }
            fh.write(json.dumps(row) + "\n")
            written += 1
    return LabelExport(written, unboxed, out)
