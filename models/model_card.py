"""The human-readable model card (MODEL_CARD.md) written beside the committed detector."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_markdown(path: Path, card: dict[str, Any]) -> None:
    t = card["training"]
    cfg = t["config"]
    m = card.get("metrics") or {}
    confusions = (
        "\n".join(
            f"| {c['truth']} | {c['detected']} | {c['count']} |" for c in m.get("confusions", [])
        )
        or "| - | - | - |"
    )
    worst = "\n".join(f"| {k} | {v:.3f} |" for k, v in m.get("worst_classes", {}).items())
    budget = (
        f" of {cfg['epochs']}: the {cfg['max_minutes']:.0f}-minute budget stopped it; a faster "
        "machine trains further"
        if t["epochs_done"] < cfg["epochs"] and "max_minutes" in cfg
        else ""
    )
    trained_on = str(t.get("device", "cpu"))  # cards before `device` trained on the CPU
    where = f"a {cfg['threads']}-core CPU" if trained_on == "cpu" else trained_on
    options = "".join(
        f" --{flag} {cfg[key]}"
        for flag, key, default in (
            ("width", "width", 32),
            ("batch-size", "batch_size", 32),
            ("lr", "lr", 3e-3),
        )
        if cfg.get(key, default) != default
    )
    device = " --device cuda" if trained_on.startswith("cuda") else ""
    text = f"""# Model card: {card["name"]}

| | |
|---|---|
| version (content hash) | `{card["version"]}` |
| file | `{card["file"]}` ({card["bytes"] / 1e6:.2f} MB, one ONNX file, dynamic batch axis) |
| architecture | {card["architecture"]} |
| parameters / FLOPs per frame | {card["parameters"]:,} / {card["flops_per_frame"] / 1e6:.0f} M |
| input | `{card["input"]["name"]}` {card["input"]["dtype"]} {card["input"]["layout"]} {card["input"]["shape"]} |
| classes | the {len(card["classes"])} SKUs of catalog `{card["catalog_version"]}`, in catalog order |

## Training data and config
{card["data"]}

Reproduce: `cartstream models train-detector --seed {cfg["seed"]} --images {cfg["images"]} --epochs {cfg["epochs"]}{" --context" if cfg.get("context") else " --no-context"} --sibling-share {cfg.get("sibling_share", 0.0)}{options}{device}`
(batch {cfg["batch_size"]}, AdamW lr {cfg["lr"]} one-cycle, weight decay {cfg["weight_decay"]},
width {cfg["width"]}, {cfg["threads"]} threads, random horizontal flips). Trained in
{t["seconds"] / 60:.1f} minutes ({t["steps"]} steps, {t["epochs_done"]} epochs{budget}) on {where}.

## Metrics (held-out rendered scenes, `cartstream models eval-detector --images {m.get("images", "?")}`)

| metric | value |
|---|---|
| mAP@0.5 | {m.get("map50", "n/a")} |
| per-frame exact-count accuracy | {m.get("count_accuracy", "n/a")} |
| true boxes taken for a same-brand sibling | {m.get("sibling_confusions", "n/a")} |

Weakest classes (AP@0.5):

| SKU | AP |
|---|---:|
{worst}

Most frequent confusions (true SKU taken for another):

| truth | detected | count |
|---|---|---:|
{confusions}

## Limits
Trained only on rendered scenes; real camera frames need captured, labelled data (the
`cart.review-frames` topic collects uncertain frames for that). Look-alikes of different sizes
are separated by weight in fusion, not by vision alone.
"""
    path.write_text(text)
