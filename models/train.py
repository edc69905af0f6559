"""`cartstream models train-detector`: render scenes, train the detector, export it to ONNX.

Reproducible from the seed (data, initial weights and batch order all derive from it; torch runs
single-process with fixed threads). Bounded by a wall-clock budget as well as by epochs. Trains
on a CUDA device when torch sees one (`device`: auto), else on the CPU; the same seed gives
close but not identical weights on the two.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from cartstream.models.catalog import Catalog
from cartstream.models.detector import CartDetector, detection_loss, make_targets
from cartstream.models.render import SceneRenderer
from cartstream.models.torch_device import pick_device

log = logging.getLogger(__name__)

BoxList = list[tuple[int, float, float, float, float]]


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    images: int = 10_000
    epochs: int = 9
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 32
    context: bool = True  # the stride-16 context stage (detector.py)
    # share of training scenes that show an item beside a same-brand sibling (milk 1 L and 2 L,
    # eggs 6 and 12, white and wholemeal bread): the pairs the detector confuses; 0 renders the
    # held-out scenes' own mix
    sibling_share: float = 0.25
    threads: int = 2
    device: str = "auto"  # auto | cpu | cuda (models.torch_device.pick_device)
    max_minutes: float = 27.0
    jpeg_quality: int = 85


@dataclass
class TrainResult:
    model: CartDetector
    config: TrainConfig
    seconds: float
    steps: int
    epochs_done: float
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = "cpu"  # where it trained: "cpu", or "cuda (the GPU's name)"

    def summary(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "seconds": round(self.seconds, 1),
            "steps": self.steps,
            "epochs_done": round(self.epochs_done, 2),
            "device": self.device,
            "final_loss": self.history[-1] if self.history else None,
        }


def scene_plan(
    rng: np.random.Generator, catalog: Catalog, sibling_share: float = 0.0
) -> tuple[str | None, list[str]]:
    """What one training (or evaluation) frame shows: the hand's item and the basket's; with
    `sibling_share`, that share of frames shows an item (in hand or not) beside a same-brand
    sibling (`Catalog.brand_siblings`). The rng is drawn from the same way when the share is 0."""
    pairs = catalog.brand_siblings
    if sibling_share > 0 and pairs and rng.random() < sibling_share:
        names = sorted(pairs)
        sku = names[int(rng.integers(len(names)))]
        other = pairs[sku][int(rng.integers(len(pairs[sku])))]
        n = len(catalog)
        rest = [catalog.skus[int(i)].sku for i in rng.integers(0, n, int(rng.integers(0, 4)))]
        if rng.random() < 0.5:
            return sku, [other, *rest]
        return None, [sku, other, *rest]
    roll = rng.random()
    n = len(catalog)
    if roll < 0.08:
        return None, []  # an empty basket, nothing in view
    basket = [catalog.skus[int(i)].sku for i in rng.integers(0, n, int(rng.integers(0, 7)))]
    if roll < 0.25:
        return None, basket or [catalog.skus[int(rng.integers(n))].sku]
    return catalog.skus[int(rng.integers(n))].sku, basket


def render_dataset(
    catalog: Catalog, count: int, seed: int, jpeg_quality: int = 85, sibling_share: float = 0.0
) -> tuple[np.ndarray, list[BoxList]]:
    """`count` labelled frames (after a JPEG round trip, as the detector will see them)."""
    renderer = SceneRenderer(catalog)
    rng = np.random.default_rng(seed)
    images = np.empty((count, renderer.size, renderer.size, 3), np.uint8)
    labels: list[BoxList] = []
    for i in range(count):
        hand, basket = scene_plan(rng, catalog, sibling_share)
        img, boxes = renderer.render(rng, int(rng.integers(2)), hand, basket)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        seen: np.ndarray | None = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        images[i] = img if seen is None else seen
        labels.append([(catalog.index(b.sku), b.x0, b.y0, b.x1, b.y1) for b in boxes])
    return images, labels


# Long on purpose: the training loop reads top to bottom (data, model, optimiser, epochs with
# the time budget, summary); its pieces share a dozen locals.
def train_detector(
    catalog: Catalog,
    config: TrainConfig,
    progress: Callable[[dict[str, float]], None] | None = None,
    data: tuple[np.ndarray, list[BoxList]] | None = None,
) -> TrainResult:
    device = pick_device(config.device, "train-detector --device")
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    started = time.monotonic()
    images, labels = (
        data
        if data is not None
        else render_dataset(
            catalog, config.images, config.seed, config.jpeg_quality, config.sibling_share
        )
    )
    log.info("rendered %d scenes in %.1f s", len(labels), time.monotonic() - started)
    model = CartDetector(len(catalog), config.width, config.context).to(device)
    log.info("training on %s", device)
    steps_per_epoch = max(1, len(labels) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=total_steps, pct_start=0.1
    )
    rng = np.random.default_rng(config.seed + 1)
    deadline = started + config.max_minutes * 60
    history: list[dict[str, float]] = []
    step = 0
    model.train()
    for epoch in range(config.epochs):
        order = rng.permutation(len(labels))
        running: dict[str, float] = {"focal": 0.0, "box": 0.0}
        for b in range(steps_per_epoch):
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            batch = images[idx]
            flip = rng.random() < 0.5  # cameras see the basket mirrored as often as not
            if flip:
                batch = batch[:, :, ::-1]
            boxes = [labels[i] for i in idx]
            if flip:
                boxes = [[(c, 1 - x1, y0, 1 - x0, y1) for c, x0, y0, x1, y1 in f] for f in boxes]
            targets = make_targets(boxes, len(catalog))
            logits, box = model.raw(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
            loss, parts = detection_loss(logits, box, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            step += 1
            for k in running:
                running[k] += parts[k]
            if time.monotonic() > deadline:
                break
        n = b + 1
        entry = {
            "epoch": epoch + (n / steps_per_epoch),
            "step": step,
            **{k: v / n for k, v in running.items()},
            "seconds": time.monotonic() - started,
        }
        history.append(entry)
        log.info(
            "epoch %.2f: focal %.3f box %.4f (%.0f s)",
            entry["epoch"],
            entry["focal"],
            entry["box"],
            entry["seconds"],
        )
        if progress:
            progress(entry)
        if time.monotonic() > deadline:
            log.warning("training stopped by the %.0f-minute budget", config.max_minutes)
            break
    model.cpu().eval()  # exported and evaluated on the CPU
    return TrainResult(
        model,
        config,
        time.monotonic() - started,
        step,
        history[-1]["epoch"] if history else 0.0,
        history,
        f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu",
    )
