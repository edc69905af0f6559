"""Cart-camera scenes rendered from the catalog, with exact box labels.

Every SKU gets a deterministic look from its catalog entry: a silhouette per shape (box, bottle,
can, bag, jar, cup, tray, bar, pack, loose produce), its two brand colours, a pattern and label
glyphs derived from its code, and a size from its weight. Look-alikes (same brand and shape,
another flavour or size) share silhouette and main colour and differ only in the band colour,
glyphs or size, as on a real shelf.

A scene is what one of the cart's two cameras sees: the basket floor, items already in it
(some partly hidden by others), optionally the item in the shopper's hand entering or leaving
(with fingers over it and motion blur), under varying light, colour cast and sensor noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cartstream.models.catalog import Catalog, Sku

FRAME_SIZE = 224
PATTERNS = ("solid", "stripes", "dots", "checks", "diagonal")


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return b, g, r


@dataclass(frozen=True)
class Look:
    """How one SKU appears: the sprite (BGRA, alpha = silhouette) at nominal scale."""

    sku: str
    sprite: np.ndarray


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _silhouette(shape: str, w: int, h: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.uint8)
    if shape in ("can", "cup", "tub"):
        cv2.rectangle(mask, (0, h // 8), (w - 1, h - 1 - h // 8), 255, -1)
        cv2.ellipse(mask, (w // 2, h // 8), (w // 2, h // 8), 0, 0, 360, 255, -1)
        cv2.ellipse(mask, (w // 2, h - 1 - h // 8), (w // 2, h // 8), 0, 0, 360, 255, -1)
    elif shape == "bottle":
        cv2.rectangle(mask, (0, h // 3), (w - 1, h - 1), 255, -1)
        cv2.rectangle(mask, (w // 3, 0), (w - 1 - w // 3, h // 3), 255, -1)
        cv2.ellipse(mask, (w // 2, h // 3), (w // 2, h // 8), 0, 180, 360, 255, -1)
    elif shape == "jar":
        cv2.rectangle(mask, (w // 10, h // 6), (w - 1 - w // 10, h - 1), 255, -1)
        cv2.rectangle(mask, (0, 0), (w - 1, h // 5), 255, -1)
    elif shape == "bag":
        pts = np.array([[w // 10, 0], [w - 1 - w // 10, 0], [w - 1, h - 1], [0, h - 1]], np.int32)
        cv2.fillPoly(mask, [pts], 255)
    elif shape == "tray":
        cv2.rectangle(mask, (0, h // 4), (w - 1, h - 1 - h // 4), 255, -1)
    elif shape in ("loose", "produce"):
        for cx, cy in ((0.3, 0.35), (0.7, 0.35), (0.5, 0.65), (0.25, 0.7), (0.75, 0.7)):
            cv2.circle(mask, (int(cx * w), int(cy * h)), int(min(w, h) * 0.28), 255, -1)
    else:  # box, carton, pack, bar
        cv2.rectangle(mask, (0, 0), (w - 1, h - 1), 255, -1)
    return mask


def make_look(sku: Sku, scale: float = 1.0) -> Look:
    """The deterministic appearance of one SKU (same code -> same pixels)."""
    d = _digest(f"{sku.brand}/{sku.shape}")  # a brand's packs share pattern and band place
    size = min(62.0, max(24.0, 28 + 11 * math.log2(max(sku.unit_grams, 10.0) / 100)))
    tall = sku.shape in ("bottle", "can", "jar", "cup", "carton")
    w = round(size * (0.75 if tall else 1.15) * scale)
    h = round(size * (1.35 if tall else 0.85) * scale)
    if sku.shape in ("loose", "produce"):
        w = h = round(size * 1.1 * scale)
    main, band = _bgr(sku.colors[0]), _bgr(sku.colors[1])
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:] = main
    pattern = PATTERNS[d[0] % len(PATTERNS)]
    step = 4 + d[1] % 5
    darker = tuple(int(c * 0.7) for c in main)
    if pattern == "stripes":
        for y in range(0, h, step * 2):
            cv2.rectangle(img, (0, y), (w - 1, y + step // 2), darker, -1)
    elif pattern == "dots":
        for y in range(step, h, step * 2):
            for x in range(step, w, step * 2):
                cv2.circle(img, (x, y), max(1, step // 3), darker, -1)
    elif pattern == "checks":
        for y in range(0, h, step * 2):
            for x in range((y // (step * 2)) % 2 * step, w, step * 2):
                cv2.rectangle(img, (x, y), (x + step - 1, y + step - 1), darker, -1)
    elif pattern == "diagonal":
        for k in range(-h, w, step * 2):
            cv2.line(img, (k, 0), (k + h, h - 1), darker, max(1, step // 3))
    if sku.shape not in ("loose", "produce"):
        y0, y1 = int(h * (0.35 + (d[2] % 10) / 100)), int(h * (0.62 + (d[3] % 10) / 100))
        cv2.rectangle(img, (0, y0), (w - 1, y1), band, -1)
        glyphs = "".join(ch for ch in sku.sku.split("-", 1)[1] if ch.isalnum())[:3]
        cv2.putText(
            img,
            glyphs,
            (2, y1 - 3),
            cv2.FONT_HERSHEY_SIMPLEX,
            max(0.25, (y1 - y0) / 28),
            main,
            1,
            cv2.LINE_AA,
        )
    else:
        cv2.circle(img, (w // 2, h // 3), max(2, w // 10), band, -1)
    alpha = _silhouette(sku.shape, w, h)
    return Look(sku.sku, np.dstack([img, alpha]))


@dataclass(frozen=True)
class Box:
    sku: str
    x0: float
    y0: float
    x1: float
    y1: float
    in_hand: bool = False


@dataclass(frozen=True)
class SceneParams:
    occlusion: float = 0.3  # chance that basket items overlap their neighbours
    blur: float = 0.5  # chance of motion blur on the item in hand
    max_noise: float = 6.0  # sensor noise std (grey levels)
    min_visible: float = 0.45  # a box is labelled only if this much of it is visible


class SceneRenderer:
    """Renders camera scenes; sprites are cached per SKU."""

    def __init__(
        self, catalog: Catalog, size: int = FRAME_SIZE, params: SceneParams | None = None
    ) -> None:
        self.catalog = catalog
        self.size = size
        self.params = params or SceneParams()
        self._looks = {s.sku: make_look(s, size / FRAME_SIZE) for s in catalog.skus}

    def repackaged(self, sku: str, colors: tuple[str, str]) -> SceneRenderer:
        """The same scenes with `sku` drawn in new packaging colours (a drift scenario)."""
        other = SceneRenderer.__new__(SceneRenderer)
        other.catalog, other.size, other.params = self.catalog, self.size, self.params
        item = dataclasses.replace(self.catalog[sku], colors=colors)
        other._looks = {**self._looks, sku: make_look(item, self.size / FRAME_SIZE)}
        return other

    def _paste(
        self,
        canvas: np.ndarray,
        owner: np.ndarray,
        owner_id: int,
        sprite: np.ndarray,
        x: int,
        y: int,
    ) -> tuple[int, int, int, int] | None:
        h, w = sprite.shape[:2]
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(self.size, x + w), min(self.size, y + h)
        if x1 <= x0 or y1 <= y0:
            return None
        part = sprite[y0 - y : y1 - y, x0 - x : x1 - x]
        mask = part[..., 3] > 0
        canvas[y0:y1, x0:x1][mask] = part[..., :3][mask]
        owner[y0:y1, x0:x1][mask] = owner_id
        return x0, y0, x1, y1

    def render(
        self,
        rng: np.random.Generator,
        camera_id: int,
        in_hand: str | None,
        in_basket: Sequence[str],
        hand_count: int = 1,
    ) -> tuple[np.ndarray, list[Box]]:
        """One BGR frame and the boxes of every item visible enough to label; `hand_count`
        units of `in_hand` are in the shopper's hand(s)."""
        s, p = self.size, self.params
        floor = np.array([70, 72, 80]) + rng.integers(-12, 12, 3)
        canvas = np.empty((s, s, 3), dtype=np.uint8)
        canvas[:] = np.clip(floor, 0, 255)
        for k in range(0, s, 14 + camera_id * 3):  # the basket's wire mesh
            cv2.line(canvas, (k, 0), (k, s - 1), (95, 95, 105), 1)
            cv2.line(canvas, (0, k), (s - 1, k), (95, 95, 105), 1)
        owner = np.zeros((s, s), dtype=np.int32)
        placed: list[tuple[str, tuple[int, int, int, int], bool]] = []
        items = list(in_basket)[-8:]
        order = rng.permutation(len(items))
        cols = 3
        for n, idx in enumerate(order):
            sprite = self._looks[items[int(idx)]].sprite
            if rng.random() < 0.5:
                sprite = np.ascontiguousarray(np.rot90(sprite))
            cx = int((n % cols + 0.5) * s / cols + rng.normal(0, 6))
            cy = int(s * 0.62 + (n // cols) * s * 0.2 + rng.normal(0, 5))
            if rng.random() < p.occlusion:  # pushed against a neighbour
                cx += int(rng.choice([-1, 1]) * s * 0.12)
            box = self._paste(
                canvas,
                owner,
                len(placed) + 1,
                sprite,
                cx - sprite.shape[1] // 2,
                cy - sprite.shape[0] // 2,
            )
            if box:
                placed.append((items[int(idx)], box, False))
        if in_hand is not None:
            sprite = self._looks[in_hand].sprite
            zoom = float(rng.uniform(1.05, 1.4))
            sprite = cv2.resize(sprite, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
            cx = int(rng.uniform(0.3, 0.7) * s)
            cy = int(rng.uniform(0.18, 0.45) * s)
            # several units in one movement are held side by side
            step = sprite.shape[1] + 4
            x0 = cx - sprite.shape[1] // 2 - (hand_count - 1) * step // 2
            for unit in range(hand_count):
                x, y = x0 + unit * step, cy - sprite.shape[0] // 2
                box = self._paste(canvas, owner, len(placed) + 1, sprite, x, y)
                if box:
                    placed.append((in_hand, box, True))
                    if unit in (0, hand_count - 1):
                        self._hand(canvas, owner, rng, box)
                    if rng.random() < p.blur:
                        self._blur(canvas, rng, box)
        boxes = self._visible_boxes(owner, placed)
        return self._camera(canvas, rng), boxes

    def _hand(
        self,
        canvas: np.ndarray,
        owner: np.ndarray,
        rng: np.random.Generator,
        box: tuple[int, int, int, int],
    ) -> None:
        x0, y0, x1, y1 = box
        skin = tuple(int(c) for c in np.array([120, 150, 200]) + rng.integers(-30, 30, 3))
        side = rng.choice([-1, 1])
        fx = x0 if side < 0 else x1
        for k in range(4):  # fingers over the edge
            fy = int(y0 + (k + 0.5) * (y1 - y0) / 5)
            cv2.ellipse(canvas, (fx, fy), (max(4, (x1 - x0) // 6), 4), 0, 0, 360, skin, -1)
            cv2.ellipse(owner, (fx, fy), (max(4, (x1 - x0) // 6), 4), 0, 0, 360, -1, -1)
        arm_to = (fx + int(side * self.size * 0.4), int(y0 - self.size * 0.3))
        cv2.line(canvas, (fx, (y0 + y1) // 2), arm_to, skin, 14)
        cv2.line(owner, (fx, (y0 + y1) // 2), arm_to, -1, 14)

    @staticmethod
    def _blur(canvas: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int, int]) -> None:
        length = int(rng.integers(3, 8))
        kernel = np.zeros((length, length), np.float32)
        if rng.random() < 0.5:
            kernel[length // 2, :] = 1.0 / length
        else:
            kernel[:, length // 2] = 1.0 / length
        x0, y0, x1, y1 = box
        region = canvas[max(0, y0 - 4) : y1 + 4, max(0, x0 - 4) : x1 + 4]
        region[:] = cv2.filter2D(region, -1, kernel)

    def _visible_boxes(
        self, owner: np.ndarray, placed: list[tuple[str, tuple[int, int, int, int], bool]]
    ) -> list[Box]:
        boxes: list[Box] = []
        s = float(self.size)
        for i, (sku, (x0, y0, x1, y1), hand) in enumerate(placed, start=1):
            mine = owner == i
            area = (x1 - x0) * (y1 - y0)
            if area == 0 or mine[y0:y1, x0:x1].sum() < self.params.min_visible * area * 0.6:
                continue
            ys, xs = np.nonzero(mine)
            boxes.append(
                Box(sku, xs.min() / s, ys.min() / s, (xs.max() + 1) / s, (ys.max() + 1) / s, hand)
            )
        return boxes

    def _camera(self, canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        img: np.ndarray = canvas.astype(np.float32)
        gain = rng.uniform(0.7, 1.25)
        cast = rng.uniform(0.9, 1.1, 3)
        img = img * gain * cast + rng.uniform(-15, 15)
        img += rng.normal(0, rng.uniform(1.0, self.params.max_noise), img.shape)
        return np.clip(img, 0, 255).astype(np.uint8)


def covered_lens(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """What a covered (or failed) camera sends: near-black, flat, a little sensor noise."""
    level = float(rng.uniform(2.0, 12.0))
    return np.clip(rng.normal(level, 1.0, shape), 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())
