"""Export a trained detector to one ONNX file (dynamic batch axis) with its model card."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from cartstream.models.catalog import Catalog
from cartstream.models.detector import INPUT_SIZE, CartDetector, count_flops
from cartstream.models.registry import content_version

log = logging.getLogger(__name__)


def export_onnx(model: CartDetector, path: Path) -> None:
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, INPUT_SIZE, INPUT_SIZE, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["images"],
        output_names=["peaks", "sizes", "offsets"],
        dynamic_shapes={"images": {0: batch}},
        dynamo=True,
        external_data=False,
    )


def write_card(
    path: Path,
    model: CartDetector,
    catalog: Catalog,
    training: dict[str, Any],
    metrics: dict[str, Any] | None,
) -> dict[str, Any]:
    """`<model>.card.json` (machine-readable) beside the ONNX file; returns it."""
    card = {
        "name": "cartstream cart-camera detector",
        "version": content_version(path),
        "file": path.name,
        "bytes": path.stat().st_size,
        "architecture": "CenterNet-style single-stage detector, depthwise-separable backbone, "
        + ("stride 8 with a stride-16 context stage" if model.context is not None else "stride 8")
        + ", heads: class heatmap / box size / centre offset",
        "input": {
            "name": "images",
            "dtype": "uint8",
            "layout": "NHWC BGR",
            "shape": ["batch", INPUT_SIZE, INPUT_SIZE, 3],
        },
        "outputs": ["peaks [B,C,28,28]", "sizes [B,2,28,28]", "offsets [B,2,28,28]"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "flops_per_frame": count_flops(model),
        "catalog_version": catalog.version,
        "classes": [s.sku for s in catalog.skus],
        "training": training,
        "metrics": metrics or {},
        "data": "Scenes rendered by cartstream.models.render from the catalog (no downloads): "
        "basket floor, 0-6 basket items with overlaps, the item in hand with fingers "
        "and motion blur, light/colour shifts, sensor noise, JPEG q85; 8 % empty.",
    }
    path.with_suffix(".card.json").write_text(json.dumps(card, indent=1) + "\n")
    return card
