"""Simple renderings of what a cart camera sees (the detector issue replaces these with scenes).

Each SKU gets a deterministic look from its catalog colours and shape; frames show the basket
with the item in hand during an action, or the basket alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from cartstream.models.catalog import Sku

FRAME_SIZE = 224


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return b, g, r


def _draw_item(img: np.ndarray, sku: Sku, cx: int, cy: int, scale: float) -> None:
    c1, c2 = _bgr(sku.colors[0]), _bgr(sku.colors[1])
    w, h = int(40 * scale), int(60 * scale)
    if sku.shape in {"can", "cup", "tub", "jar"}:
        cv2.ellipse(img, (cx, cy), (w // 2, h // 2), 0, 0, 360, c1, -1)
        cv2.ellipse(img, (cx, cy), (w // 2, h // 6), 0, 0, 360, c2, -1)
    elif sku.shape in {"loose", "produce"}:
        for k in range(5):
            dx, dy = int((k - 2) * 9 * scale), int(((k * 7) % 5 - 2) * 6 * scale)
            cv2.circle(img, (cx + dx, cy + dy), int(12 * scale), c1, -1)
        cv2.circle(img, (cx, cy), int(5 * scale), c2, -1)
    else:
        cv2.rectangle(img, (cx - w // 2, cy - h // 2), (cx + w // 2, cy + h // 2), c1, -1)
        cv2.rectangle(img, (cx - w // 2, cy - h // 8), (cx + w // 2, cy + h // 8), c2, -1)


def render_frame(
    camera_id: int,
    in_hand: Sku | None,
    in_basket: Sequence[Sku],
    rng: np.random.Generator,
    size: int = FRAME_SIZE,
) -> np.ndarray:
    """A BGR frame: basket floor, items already inside, and the item in the shopper's hand."""
    img = np.full((size, size, 3), (70, 70, 80), dtype=np.uint8)
    for k in range(0, size, 16):
        cv2.line(img, (k, 0), (k, size), (90, 90, 100), 1)
    for i, sku in enumerate(in_basket[-6:]):
        cx = 30 + (i % 3) * 70 + camera_id * 8
        cy = size - 40 - (i // 3) * 50
        _draw_item(img, sku, cx, cy, 0.7)
    if in_hand is not None:
        cx = int(rng.integers(size // 3, 2 * size // 3))
        _draw_item(img, in_hand, cx, size // 3, 1.3)
    gain = float(rng.uniform(0.85, 1.15))
    noisy = img.astype(np.float32) * gain + rng.normal(0.0, 3.0, img.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())
