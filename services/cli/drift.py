"""`cartstream models drift-reference | drift-scenarios`: the reference a detector's live
detections are compared with, and the scenarios that prove drift monitoring (docs/drift.md)."""

from __future__ import annotations

from pathlib import Path

import click

from cartstream.models.catalog import Catalog
from cartstream.models.inference import BUNDLED_MODEL
from cartstream.services.carts.simulate import SceneChange, SimConfig
from cartstream.services.cli.context import cli_settings, console


@click.command("drift-reference")
@click.option("--carts", type=int, default=8, show_default=True)
@click.option("--sessions", type=int, default=36, show_default=True, help="Per cart.")
@click.option("--seed", type=int, default=101, show_default=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Default: beside detect.model_path, else beside the bundled model.",
)
@click.pass_context
def drift_reference(
    ctx: click.Context, carts: int, sessions: int, seed: int, out: Path | None
) -> None:
    """Build the drift reference of the detector in use from honest simulated shopping."""
    from cartstream.services.tools.drift import build_reference

    settings = cli_settings(ctx)
    model = settings.detect.model_path or BUNDLED_MODEL
    target = out or model.with_suffix(".drift.json")
    config = SimConfig(carts=carts, sessions=sessions, seed=seed, run_id="drift-reference")
    reference = build_reference(config, settings, Catalog.load())
    reference.save(target)
    console.print(f"drift reference of {reference.frames} frames written to {target}")


@click.command("drift-scenarios")
@click.option("--carts", type=int, default=8, show_default=True)
@click.option("--sessions", type=int, default=8, show_default=True, help="Per cart.")
@click.option("--seeds", default="202,203,204", show_default=True, help="One run per seed.")
@click.option(
    "--sku", default=None, help="The SKU whose packaging changes (default: the most popular)."
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("docs/drift.md"), show_default=True
)
@click.pass_context
def drift_scenarios(
    ctx: click.Context, carts: int, sessions: int, seeds: str, sku: str | None, out: Path
) -> None:
    """Honest runs (false alarms), a lighting change in one store and a packaging change, each
    through the detect stage and the drift monitor; prints a table and writes `out`."""
    from cartstream.models.drift import DriftReference
    from cartstream.services.tools.drift import (
        CART_CLOCK_END_MS,
        run_scenario,
        run_start_ms,
        table,
        write_report,
    )

    settings = cli_settings(ctx)
    catalog = Catalog.load()
    stage_model = settings.detect.model_path or BUNDLED_MODEL
    path = settings.detect.drift_reference or stage_model.with_suffix(".drift.json")
    reference = DriftReference.load(path)
    changed = sku or max(catalog.skus, key=lambda s: s.popularity).sku
    results = []
    for seed in (int(s) for s in seeds.split(",") if s.strip()):
        config = SimConfig(carts=carts, sessions=sessions, seed=seed, run_id=f"drift-{seed}")
        start = run_start_ms(config, catalog)
        midway = start + int(0.4 * (CART_CLOCK_END_MS - start))
        scenarios = {
            f"honest (seed {seed})": [],
            f"lighting x0.6 in store-001 (seed {seed})": [
                SceneChange("lighting", midway, store_id="store-001", gain=0.6)
            ],
            f"packaging of {changed} (seed {seed})": [
                SceneChange("packaging", midway, sku=changed)
            ],
        }
        for name, changes in scenarios.items():
            results.append(run_scenario(name, config, settings, catalog, reference, changes))
            console.print(table(results[-1:]).splitlines()[-1])
    command = (
        f"cartstream models drift-scenarios --carts {carts} --sessions {sessions} --seeds {seeds}"
    )
    write_report(out, results, settings, command)
    click.echo(table(results))
    click.echo(f"written to {out}")


COMMANDS = (drift_reference, drift_scenarios)
