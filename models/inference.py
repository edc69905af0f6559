"""Detector inference with onnxruntime, shaped like a Triton python backend model:
`initialize()` once, `run(batch)` many times, `close()` at the end.

The execution provider is chosen at run time: CUDA when onnxruntime-gpu (the `gpu` extra) is
installed and a GPU is visible, CPU otherwise; the choice is logged. Decoding the JPEGs, stacking
the batch and turning peaks into boxes are vectorised (OpenCV and numpy over the whole batch).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from cartstream.exceptions import ConfigurationError
from cartstream.models.detector import INPUT_SIZE

log = logging.getLogger(__name__)

ARTIFACT_DIR = Path(__file__).parent / "artifacts"
BUNDLED_MODEL = ARTIFACT_DIR / "detector.onnx"


@dataclass(frozen=True)
class FrameDetections:
    """Detections of one frame, best first. `classes` index the catalog order."""

    classes: np.ndarray  # [k] int
    scores: np.ndarray  # [k] float32
    boxes: np.ndarray  # [k, 4] float32 x0, y0, x1, y1 as frame fractions

    @property
    def best_score(self) -> float:
        return float(self.scores[0]) if self.scores.size else 0.0


def model_card(model_path: Path) -> dict[str, Any]:
    card = model_path.with_suffix(".card.json")
    if not card.is_file():
        raise ConfigurationError(f"{model_path} has no model card ({card.name})")
    data: dict[str, Any] = json.loads(card.read_text())
    return data


def choose_providers(device: str = "auto") -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise ConfigurationError(
            "device=cuda but onnxruntime has no CUDAExecutionProvider "
            "(install the `gpu` extra on a machine with a GPU)"
        )
    return ["CPUExecutionProvider"]


def overlapped(boxes: np.ndarray, iou_limit: float) -> np.ndarray:
    """[B, k] True where a higher-ranked box of the same frame overlaps more than `iou_limit`.

    Class-agnostic "Fast NMS" over score-sorted boxes [B, k, 4]: one object seen as two
    look-alike classes keeps only its best class.
    """
    a = boxes[:, :, None, :]
    b = boxes[:, None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    iou = inter / np.maximum(area[:, :, None] + area[:, None, :] - inter, 1e-9)
    iou = np.triu(iou, 1)  # [i, j] with i ranked above j
    return np.asarray(iou.max(axis=1) > iou_limit)


def decode_peaks(
    peaks: np.ndarray,
    sizes: np.ndarray,
    offsets: np.ndarray,
    threshold: float,
    top_k: int,
    nms_iou: float = 0.5,
) -> list[FrameDetections]:
    """Model outputs -> per-frame detections, vectorised over the batch."""
    b, _, h, w = peaks.shape
    # Boxes are predicted per cell, not per class, so two classes peaking in one cell share a
    # box and the class-agnostic NMS below would keep only the better one anyway: reduce over
    # the classes first (one pass over the heatmap), then rank cells.
    cells = peaks.reshape(b, peaks.shape[1], -1)
    cell_scores = cells.max(axis=1)
    cell_classes = cells.argmax(axis=1)
    k = min(top_k, cell_scores.shape[1])
    cell = np.argpartition(-cell_scores, k - 1, axis=1)[:, :k]
    scores = np.take_along_axis(cell_scores, cell, 1)
    order = np.argsort(-scores, axis=1, kind="stable")
    cell = np.take_along_axis(cell, order, 1)
    scores = np.take_along_axis(scores, order, 1)
    classes = np.take_along_axis(cell_classes, cell, 1)
    cy, cx = np.divmod(cell, w)
    wh = np.take_along_axis(sizes.reshape(b, 2, -1), cell[:, None, :].repeat(2, 1), 2)
    off = np.take_along_axis(offsets.reshape(b, 2, -1), cell[:, None, :].repeat(2, 1), 2)
    x = (cx + off[:, 0]) / w
    y = (cy + off[:, 1]) / h
    boxes = np.stack([x - wh[:, 0] / 2, y - wh[:, 1] / 2, x + wh[:, 0] / 2, y + wh[:, 1] / 2], -1)
    boxes = np.clip(boxes, 0.0, 1.0).astype(np.float32)
    keep = (scores >= threshold) & ~overlapped(boxes, nms_iou)
    return [
        FrameDetections(
            classes[i][keep[i]], scores[i][keep[i]].astype(np.float32), boxes[i][keep[i]]
        )
        for i in range(b)
    ]


def frame_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[B] mean and [B] standard deviation of the grey levels of a uint8 NHWC batch, on every
    4th pixel: a dark or uniform frame (covered or failed camera) shows as a low mean or std."""
    grey = images[:, ::4, ::4].mean(axis=3, dtype=np.float32)
    flat = grey.reshape(len(images), -1)
    return flat.mean(axis=1), flat.std(axis=1)


def decode_jpegs(jpegs: Sequence[bytes], size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 NHWC batch and a mask of the frames that decoded (others are zeros)."""
    batch = np.empty((len(jpegs), size, size, 3), np.uint8)
    ok = np.zeros(len(jpegs), bool)
    for i, data in enumerate(jpegs):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            batch[i] = 0
            continue
        if img.shape[0] != size or img.shape[1] != size:
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        batch[i] = img
        ok[i] = True
    return batch, ok


class Detector(Protocol):
    """What the detect stage needs of a detector: in process (`DetectorRuntime`) or behind an
    inference server (`remote.RemoteDetector`)."""

    skus: list[str]
    provider: str

    @property
    def version(self) -> str: ...

    def run(self, images: np.ndarray, threshold: float | None = None) -> list[FrameDetections]: ...

    def close(self) -> None: ...


class DetectorRuntime:
    def __init__(
        self,
        model_path: Path | None = None,
        threshold: float = 0.3,
        top_k: int = 24,
        device: str = "auto",
        threads: int | None = None,
    ) -> None:
        self.model_path = model_path or BUNDLED_MODEL
        self.threshold = threshold
        self.top_k = top_k
        self.device = device
        self.threads = threads
        self.session: Any = None
        self.card = model_card(self.model_path)
        self.version: str = str(self.card["version"])
        self.skus: list[str] = list(self.card["classes"])
        self.provider = "unset"

    def initialize(self) -> DetectorRuntime:
        import onnxruntime as ort

        if not self.model_path.is_file():
            raise ConfigurationError(f"detector model {self.model_path} not found")
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        providers = choose_providers(self.device)
        self.session = ort.InferenceSession(str(self.model_path), options, providers=providers)
        self.provider = self.session.get_providers()[0]
        log.info("detector %s (%s) on %s", self.model_path.name, self.version, self.provider)
        return self

    def warm_up(self, batch: int) -> None:
        """Run one blank batch, so the first real batch doesn't pay for memory planning."""
        self.run_raw(np.zeros((batch, INPUT_SIZE, INPUT_SIZE, 3), np.uint8))

    def run(self, images: np.ndarray, threshold: float | None = None) -> list[FrameDetections]:
        """Detections for a uint8 NHWC batch of BGR frames (score >= threshold)."""
        if self.session is None:
            self.initialize()
        peaks, sizes, offsets = self.session.run(None, {"images": images})
        cut = self.threshold if threshold is None else threshold
        return decode_peaks(peaks, sizes, offsets, cut, self.top_k)

    def run_raw(self, images: np.ndarray) -> list[np.ndarray]:
        """The model's outputs without decoding (benchmarks)."""
        if self.session is None:
            self.initialize()
        return list(self.session.run(None, {"images": images}))

    def close(self) -> None:
        self.session = None
