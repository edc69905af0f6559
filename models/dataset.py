"""Labelled camera frames from the review loop, as extra training data for the detector.

A folder written by `cartstream review export` holds `images/*.jpg` and `labels.jsonl`; rows a
person has checked carry `"verified": true` and `boxes` as [{sku, x0, y0, x1, y1}] in frame
fractions. Only verified rows are used: the detector's own pre-labels would teach it its
mistakes.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from cartstream.exceptions import ConfigurationError
from cartstream.models.catalog import Catalog
from cartstream.models.detector import INPUT_SIZE

BoxList = list[tuple[int, float, float, float, float]]


def load_labelled(folder: Path, catalog: Catalog) -> tuple[np.ndarray, list[BoxList]]:
    """(uint8 NHWC images, boxes per image) of the verified rows of an exported folder."""
    labels = folder / "labels.jsonl"
    if not labels.is_file():
        raise ConfigurationError(f"{folder} has no labels.jsonl (see `cartstream review export`)")
    images: list[np.ndarray] = []
    boxes: list[BoxList] = []
    for n, line in enumerate(labels.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not row.get("verified"):
            continue
        img = cv2.imread(str(folder / row["image"]), cv2.IMREAD_COLOR)
        if img is None:
            raise ConfigurationError(f"{labels}:{n}: cannot read {row['image']}")
        if img.shape[:2] != (INPUT_SIZE, INPUT_SIZE):
            img = cv2.resize(img, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
        frame: BoxList = []
        for b in row.get("boxes", []):
            if b["sku"] not in catalog:
                raise ConfigurationError(f"{labels}:{n}: unknown SKU {b['sku']!r}")
            frame.append((catalog.index(b["sku"]), b["x0"], b["y0"], b["x1"], b["y1"]))
        images.append(img)
        boxes.append(frame)
    if not images:
        return np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8), []
    return np.stack(images), boxes
