"""`cartstream models ...`: train and evaluate the detector (the registry: registry.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from cartstream.models.inference import BUNDLED_MODEL
from cartstream.services.cli.registry import open_registry, registry_option

console = Console(stderr=True)
TRAINED_MODEL = Path("cartstream-models/detector.onnx")  # not the shipped artifact


@click.group()
def models() -> None:
    """The item detector: train, export, evaluate."""


@models.command("train-detector")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--images", type=int, default=10_000, show_default=True, help="Rendered scenes.")
@click.option("--epochs", type=int, default=9, show_default=True)
@click.option("--minutes", type=float, default=27.0, show_default=True, help="Time budget.")
@click.option(
    "--context/--no-context",
    default=True,
    show_default=True,
    help="Add the stride-16 context stage (a wider view: pack sizes and silhouettes).",
)
@click.option(
    "--sibling-share",
    type=click.FloatRange(0, 1),
    default=0.25,
    show_default=True,
    help="Share of training scenes showing an item beside a same-brand sibling.",
)
@click.option(
    "--width",
    type=click.IntRange(8, 128),
    default=32,
    show_default=True,
    help="Channels of the first stage (x2, x4 after): capacity, on a GPU above all.",
)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(0, 1, min_open=True), default=3e-3, show_default=True)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where to train: auto is a CUDA device when torch sees one, else the CPU.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=TRAINED_MODEL,
    show_default=True,
    help="Where the ONNX model goes (its card and MODEL_CARD.md beside it).",
)
@click.option(
    "--replace-bundled",
    is_flag=True,
    help="Write over the artifact shipped with the package (models/artifacts) instead of --out.",
)
@click.option("--eval-images", type=int, default=1000, show_default=True)
@click.option(
    "--extra",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    multiple=True,
    help="A folder from `cartstream review export`; its verified images join the training set.",
)
@click.option(
    "--register/--no-register",
    default=True,
    show_default=True,
    help="Register the model (parent: the promoted version); promoting it is a separate step.",
)
@registry_option
@click.pass_context
def train_detector(
    ctx: click.Context,
    seed: int,
    images: int,
    epochs: int,
    minutes: float,
    context: bool,
    sibling_share: float,
    width: int,
    batch_size: int,
    lr: float,
    device: str,
    out: Path,
    replace_bundled: bool,
    eval_images: int,
    extra: tuple[Path, ...],
    register: bool,
    registry: Path | None,
) -> None:
    """Render scenes, train, export ONNX, evaluate on held-out scenes, write the model card.

    The shipped artifact is never overwritten unless --replace-bundled says so; workers use a
    trained model through CARTSTREAM_DETECT__MODEL_PATH."""
    from cartstream.models.catalog import Catalog
    from cartstream.models.evaluate import evaluate_detector
    from cartstream.models.export import export_onnx, write_card
    from cartstream.models.inference import DetectorRuntime
    from cartstream.models.model_card import write_markdown
    from cartstream.models.train import TrainConfig
    from cartstream.models.train import train_detector as train

    if replace_bundled:
        out = BUNDLED_MODEL
    elif out.resolve() == BUNDLED_MODEL.resolve():
        raise click.BadParameter(
            "that is the shipped artifact; pass --replace-bundled to overwrite it",
            param_hint="--out",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("cartstream").setLevel(logging.INFO)
    catalog = Catalog.load()
    config = TrainConfig(
        seed=seed,
        images=images,
        epochs=epochs,
        max_minutes=minutes,
        context=context,
        sibling_share=sibling_share,
        width=width,
        batch_size=batch_size,
        lr=lr,
        device=device,
    )
    data = _with_extra(catalog, config, extra) if extra else None
    result = train(
        catalog,
        config,
        data=data,
        progress=lambda e: console.print(
            f"epoch {e['epoch']:.2f}  focal {e['focal']:.3f}  box {e['box']:.4f}  "
            f"{e['seconds']:.0f} s"
        ),
    )
    export_onnx(result.model, out)
    write_card(out, result.model, catalog, result.summary(), None)
    report = evaluate_detector(DetectorRuntime(out), catalog, images=eval_images)
    card = write_card(out, result.model, catalog, result.summary(), report.as_dict())
    write_markdown(out.parent / "MODEL_CARD.md", card)
    console.print(
        f"[bold]{card['version']}[/]: {out} ({card['bytes'] / 1e6:.2f} MB), "
        f"trained in {result.seconds / 60:.1f} min, mAP@0.5 {report.map50:.3f}, "
        f"count accuracy {report.count_accuracy:.3f}"
    )
    if register:
        reg = open_registry(ctx, registry)
        entry = reg.register(out, parent=reg.promoted(), source=f"train-detector --seed {seed}")
        console.print(
            f"registered in {reg.root} (parent {entry.parent or 'none'}); "
            f"`cartstream models promote {entry.version}` makes workers load it"
        )
    elif out != BUNDLED_MODEL:
        console.print(f"workers use it with CARTSTREAM_DETECT__MODEL_PATH={out.resolve()}")


def _with_extra(catalog: Any, config: Any, extra: tuple[Path, ...]) -> tuple[Any, list[Any]]:
    """The rendered training set plus the verified images of exported review queues."""
    import numpy as np

    from cartstream.models.dataset import load_labelled
    from cartstream.models.train import render_dataset

    scenes, labels = render_dataset(
        catalog, config.images, config.seed, config.jpeg_quality, config.sibling_share
    )
    for folder in extra:
        more, more_labels = load_labelled(folder, catalog)
        console.print(f"{folder}: {len(more_labels)} verified images")
        scenes, labels = np.concatenate([scenes, more]), labels + more_labels
    return scenes, labels


@models.command("eval-detector")
@click.option("--images", type=int, default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--model", type=click.Path(path_type=Path, exists=True), default=None)
@click.option("--json", "as_json", is_flag=True)
def eval_detector(images: int, seed: int, model: Path | None, as_json: bool) -> None:
    """mAP@0.5, exact-count accuracy and look-alike confusions on held-out scenes."""
    from cartstream.models.catalog import Catalog
    from cartstream.models.evaluate import evaluate_detector
    from cartstream.models.inference import DetectorRuntime

    runtime = DetectorRuntime(model)
    report = evaluate_detector(runtime, Catalog.load(), images=images, seed=seed)
    out = {"model_version": runtime.version, **report.as_dict()}
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    click.echo(f"model {runtime.version} on {report.images} held-out scenes (seed {seed})")
    click.echo(f"  mAP@0.5          {report.map50:.4f}")
    click.echo(f"  count accuracy   {report.count_accuracy:.4f}")
    click.echo(f"  taken for a same-brand sibling: {report.sibling_confusions} boxes")
    wrong = ", ".join(f"{k} {n}" for k, n in report.count_errors.items())
    click.echo(f"  frames with a wrong count, by what is wrong (a frame may have several): {wrong}")
    for row in out["confusions"]:
        click.echo(f"  {row['truth']:<22} taken for {row['detected']:<22} {row['count']}x")
