"""`cartstream models eval-detector`: score the detector on held-out rendered scenes.

Held-out means rendered from a seed range training never uses (training seeds are small; the
evaluation stream is offset by 10**6). Reports mAP@0.5 (VOC all-point interpolation, mean over
classes present), per-frame exact-count accuracy (the multiset of SKUs above the score threshold
equals the truth), and which SKUs are taken for which (look-alikes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cartstream.models.catalog import Catalog
from cartstream.models.inference import DetectorRuntime, FrameDetections
from cartstream.models.train import BoxList, render_dataset

HELD_OUT_OFFSET = 1_000_000
MAP_MIN_SCORE = 0.05  # detections ranked for mAP; exact counts use the operating threshold


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box against many (x0, y0, x1, y1)."""
    if boxes.size == 0:
        return np.zeros(0)
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


@dataclass
class EvalReport:
    images: int
    map50: float
    count_accuracy: float
    per_class_ap: dict[str, float]
    confusions: list[tuple[str, str, int]]
    mean_best_score: float
    # true boxes taken for a same-brand sibling (`Catalog.brand_siblings`), every pair counted
    sibling_confusions: int = 0
    # frames whose count is wrong, by what is wrong in them (a frame may have several): a true
    # box taken for another SKU, a true box not found, a box found where there is none
    count_errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        worst = sorted(self.per_class_ap.items(), key=lambda kv: kv[1])[:8]
        return {
            "images": self.images,
            "map50": round(self.map50, 4),
            "count_accuracy": round(self.count_accuracy, 4),
            "sibling_confusions": self.sibling_confusions,
            "count_errors": self.count_errors,
            "worst_classes": {k: round(v, 4) for k, v in worst},
            "confusions": [{"truth": a, "detected": b, "count": n} for a, b, n in self.confusions],
        }


def score_detections(
    catalog: Catalog, truth: list[BoxList], found: list[FrameDetections], threshold: float
) -> EvalReport:
    by_class: dict[int, list[tuple[float, bool]]] = {}
    gt_count: Counter[int] = Counter()
    confusions: Counter[tuple[str, str]] = Counter()
    errors: Counter[str] = Counter({"swapped": 0, "missed": 0, "extra": 0})
    exact = 0
    for labels, det in zip(truth, found, strict=True):
        gt = np.array([b[1:] for b in labels], np.float32).reshape(-1, 4)
        gt_cls = np.array([b[0] for b in labels], np.int64)
        gt_count.update(gt_cls.tolist())
        used = np.zeros(len(labels), bool)
        for cls, score, box in zip(det.classes, det.scores, det.boxes, strict=True):
            same = np.nonzero((gt_cls == cls) & ~used)[0]
            overlaps = iou(box, gt[same])
            hit = bool(overlaps.size and overlaps.max() >= 0.5)
            if hit:
                used[same[int(overlaps.argmax())]] = True
            by_class.setdefault(int(cls), []).append((float(score), hit))
        for g, cls in zip(gt, gt_cls, strict=True):  # what each true box was taken for
            overlaps = iou(g, det.boxes)
            if overlaps.size and overlaps.max() >= 0.5:
                other = int(det.classes[int(overlaps.argmax())])
                if other != cls:
                    confusions[(catalog.skus[cls].sku, catalog.skus[other].sku)] += 1
        kept = det.scores >= threshold
        if Counter(det.classes[kept].tolist()) == Counter(gt_cls.tolist()):
            exact += 1
        else:
            errors.update(count_error_kinds(gt, gt_cls, det.boxes[kept], det.classes[kept]))
    ap: dict[str, float] = {}
    for cls, n_gt in gt_count.items():
        entries = sorted(by_class.get(cls, []), key=lambda e: -e[0])
        hits = np.array([h for _, h in entries], dtype=np.float64)
        tp = np.cumsum(hits)
        fp = np.cumsum(1 - hits)
        recall = tp / n_gt if entries else np.zeros(0)
        precision = tp / np.maximum(tp + fp, 1e-9) if entries else np.zeros(0)
        ap[catalog.skus[cls].sku] = average_precision(recall, precision)
    best = [d.best_score for d in found]
    return EvalReport(
        images=len(truth),
        map50=float(np.mean(list(ap.values()))) if ap else 0.0,
        count_accuracy=exact / max(1, len(truth)),
        per_class_ap=ap,
        confusions=[(a, b, n) for (a, b), n in confusions.most_common(10)],
        mean_best_score=float(np.mean(best)) if best else 0.0,
        sibling_confusions=sum(
            n for (a, b), n in confusions.items() if b in catalog.brand_siblings.get(a, ())
        ),
        count_errors=dict(errors),
    )


def count_error_kinds(
    gt: np.ndarray, gt_cls: np.ndarray, boxes: np.ndarray, classes: np.ndarray
) -> set[str]:
    """What is wrong in a frame whose count is wrong, from the boxes kept at the operating
    threshold: `swapped` (a true box's best match, IoU >= 0.5, is another SKU), `missed` (a true
    box matched by none) and `extra` (a kept box that matches no true box)."""
    kinds: set[str] = set()
    matched = np.zeros(len(boxes), bool)
    for g, cls in zip(gt, gt_cls, strict=True):
        overlaps = iou(g, boxes)
        if not (overlaps.size and overlaps.max() >= 0.5):
            kinds.add("missed")
            continue
        best = int(overlaps.argmax())
        matched[best] = True
        if classes[best] != cls:
            kinds.add("swapped")
    if not matched.all():
        kinds.add("extra")
    return kinds


def evaluate_detector(
    runtime: DetectorRuntime,
    catalog: Catalog,
    images: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
) -> EvalReport:
    frames, truth = render_dataset(catalog, images, HELD_OUT_OFFSET + seed)
    return evaluate_frames(runtime, catalog, frames, truth, batch_size)


def evaluate_frames(
    runtime: DetectorRuntime,
    catalog: Catalog,
    frames: np.ndarray,
    truth: list[BoxList],
    batch_size: int = 64,
) -> EvalReport:
    """Scores on given frames and their true boxes (held-out scenes, verified review frames)."""
    found: list[FrameDetections] = []
    for i in range(0, len(frames), batch_size):  # mAP ranks every detection, down to a low score
        found += runtime.run(frames[i : i + batch_size], threshold=MAP_MIN_SCORE)
    return score_detections(catalog, truth, found, runtime.threshold)
