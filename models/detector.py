"""A compact single-stage detector (CenterNet-style) for cart-camera frames.

Input: a batch of BGR uint8 frames, NHWC, 224x224 (the camera's JPEGs decoded as they are).
Normalisation, the NCHW transpose and peak extraction (3x3 max-pool NMS) are inside the graph,
so the exported ONNX model does the numeric work and the runtime only picks the top peaks.

Outputs at stride 8 (28x28 cells for 224 input):
- `peaks`  [B, C, H, W]: class score at local maxima of the heatmap, 0 elsewhere;
- `sizes`  [B, 2, H, W]: box width and height as fractions of the frame;
- `offsets`[B, 2, H, W]: sub-cell offset of the box centre, in cells.
Training uses the focal loss on Gaussian-splatted centres and L1 on size/offset at centres.

With `context` (the default) a stride-16 stage is added and its features, upsampled, join the
stride-8 ones before the heads: the receptive field grows from 87 to about 167 pixels, so a cell
sees the whole of a 62-pixel pack (a 1 L carton and a 2 L bottle of the same milk differ only in
silhouette; 6 and 12 eggs in size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

STRIDE = 8
INPUT_SIZE = 224


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(_conv_bn(cin, cin, 3, stride, groups=cin), _conv_bn(cin, cout, 1))


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = _separable(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)  # type: ignore[no-any-return]


class CartDetector(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, num_classes: int, width: int = 32, context: bool = True) -> None:
        super().__init__()
        w = width
        self.num_classes = num_classes
        self.context: nn.Module | None = None
        self.backbone = nn.Sequential(
            _conv_bn(3, w, 3, 2),  # /2
            _separable(w, 2 * w, 2),  # /4
            Residual(2 * w),
            _separable(2 * w, 4 * w, 2),  # /8
            Residual(4 * w),
            Residual(4 * w),
            Residual(4 * w),
        )
        if context:
            self.context = nn.Sequential(
                _separable(4 * w, 8 * w, 2),  # /16
                Residual(8 * w),
                Residual(8 * w),
                _conv_bn(8 * w, 4 * w, 1),
            )
        self.neck = _separable(4 * w, 4 * w)
        self.heat = nn.Conv2d(4 * w, num_classes, 1)
        self.box = nn.Conv2d(4 * w, 4, 1)
        assert self.heat.bias is not None
        nn.init.constant_(self.heat.bias, -4.6)  # start at p = 0.01 (focal-loss prior)
        self.register_buffer("mean", torch.tensor([0.406, 0.456, 0.485]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([0.225, 0.224, 0.229]).view(1, 3, 1, 1) * 255)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        x = self.backbone(x)
        if self.context is not None:
            x = x + F.interpolate(self.context(x), size=x.shape[-2:], mode="nearest")
        return self.neck(x)  # type: ignore[no-any-return]

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heat logits [B,C,H,W] and box regression [B,4,H,W] (training)."""
        f = self.features(images)
        return self.heat(f), self.box(f)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, box = self.raw(images)
        heat = torch.sigmoid(logits)
        peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat).float()
        return peaks, torch.sigmoid(box[:, :2]), torch.sigmoid(box[:, 2:])


@dataclass(frozen=True)
class Targets:
    heat: np.ndarray  # [B, C, H, W] float32 Gaussian splats
    index: np.ndarray  # [B, K] flat cell index of each object (H*W grid)
    size: np.ndarray  # [B, K, 2] width/height as fractions
    offset: np.ndarray  # [B, K, 2] sub-cell offset in cells
    mask: np.ndarray  # [B, K] 1 where an object exists


def make_targets(
    boxes: list[list[tuple[int, float, float, float, float]]],
    num_classes: int,
    size: int = INPUT_SIZE,
    max_objects: int = 16,
) -> Targets:
    """Training targets from (class, x0, y0, x1, y1) boxes in frame fractions."""
    grid = size // STRIDE
    b = len(boxes)
    heat = np.zeros((b, num_classes, grid, grid), np.float32)
    index = np.zeros((b, max_objects), np.int64)
    wh = np.zeros((b, max_objects, 2), np.float32)
    off = np.zeros((b, max_objects, 2), np.float32)
    mask = np.zeros((b, max_objects), np.float32)
    ys, xs = np.mgrid[0:grid, 0:grid].astype(np.float32)
    for i, frame in enumerate(boxes):
        for k, (cls, x0, y0, x1, y1) in enumerate(frame[:max_objects]):
            cx, cy = (x0 + x1) / 2 * grid, (y0 + y1) / 2 * grid
            w, h = (x1 - x0) * grid, (y1 - y0) * grid
            sigma = max(0.5, min(w, h) / 6)
            g = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
            np.maximum(heat[i, cls], g, out=heat[i, cls])
            ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
            heat[i, cls, iy, ix] = 1.0
            index[i, k] = iy * grid + ix
            wh[i, k] = (x1 - x0, y1 - y0)
            off[i, k] = (cx - ix, cy - iy)
            mask[i, k] = 1.0
    return Targets(heat, index, wh, off, mask)


def detection_loss(
    logits: torch.Tensor, box: torch.Tensor, t: Targets
) -> tuple[torch.Tensor, dict[str, float]]:
    device = logits.device
    heat = torch.from_numpy(t.heat).to(device)
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1.0).float()
    neg = 1.0 - pos
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - p) * p**2 * (1 - heat) ** 4 * neg).sum()
    n = pos.sum().clamp(min=1.0)
    focal = (pos_loss + neg_loss) / n
    b, _, h, w = box.shape
    flat = torch.sigmoid(box).view(b, 4, h * w)
    idx = torch.from_numpy(t.index).to(device).unsqueeze(1).expand(b, 4, -1)
    picked = flat.gather(2, idx).permute(0, 2, 1)  # [B, K, 4]
    mask = torch.from_numpy(t.mask).to(device).unsqueeze(-1)
    target = torch.from_numpy(np.concatenate([t.size, t.offset], axis=-1)).to(device)
    reg = F.l1_loss(picked * mask, target * mask, reduction="sum") / n
    total = focal + 5.0 * reg
    return total, {"focal": float(focal.detach()), "box": float(reg.detach())}


def count_flops(model: CartDetector, size: int = INPUT_SIZE) -> int:
    """Multiply-adds x 2 of one frame through the convolutions (the model's cost)."""
    flops = 0

    def hook(module: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal flops
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            per_out = k * module.in_channels // module.groups
            flops += 2 * per_out * out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, size, size, 3, dtype=torch.uint8))
    for h in handles:
        h.remove()
    return flops
