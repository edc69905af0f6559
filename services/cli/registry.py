"""`cartstream models register | list | show | promote | rollback`: the detector registry
(models/registry.py). Workers load the promoted version when `detect.registry` is set
(CARTSTREAM_DETECT__REGISTRY, the chart's `detector.registry`), so a rollout is a promotion
and a restart, with no code or image change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from cartstream.models.registry import PROMOTED, Registered, Registry
from cartstream.schemas.records import ShadowDetection
from cartstream.services.cli.context import cli_settings

if TYPE_CHECKING:
    from cartstream.services.tools.shadow_report import ShadowReport

DEFAULT_REGISTRY = Path("cartstream-models/registry")
FOLLOW = "workers on `promoted` switch within detect.promotion_check_s, others at their next start"

registry_option = click.option(
    "--registry",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help=f"The registry folder (default: detect.registry, else {DEFAULT_REGISTRY}).",
)


def open_registry(ctx: click.Context, path: Path | None) -> Registry:
    return Registry(path or cli_settings(ctx).detect.registry or DEFAULT_REGISTRY)


def _metric(model: Registered, name: str) -> str:
    value = model.metrics.get(name)
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


@click.command("register")
@click.argument("model", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--parent", default=None, help="The version it was trained from (default: promoted).")
@registry_option
@click.pass_context
def register(ctx: click.Context, model: Path, parent: str | None, registry: Path | None) -> None:
    """Register a trained model (ONNX file with its .card.json) under its content version."""
    reg = open_registry(ctx, registry)
    if parent is None:
        parent = reg.promoted()
    entry = reg.register(model, parent=parent)
    click.echo(f"{entry.version} registered in {reg.root} (parent {entry.parent or 'none'})")


@click.command("list")
@registry_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_models(ctx: click.Context, registry: Path | None, as_json: bool) -> None:
    """Every registered version, its metrics, and which one is promoted."""
    reg = open_registry(ctx, registry)
    promoted = reg.promoted()
    rows = reg.versions()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "version": r.version,
                        "promoted": r.version == promoted,
                        "parent": r.parent,
                        "registered_at": r.registration.get("registered_at"),
                        "metrics": r.metrics,
                    }
                    for r in rows
                ],
                indent=1,
            )
        )
        return
    if not rows:
        click.echo(f"no models registered in {reg.root}")
        return
    click.echo(f"{'':2}{'version':<18}{'registered':<27}{'parent':<18}{'mAP@0.5':>8}{'count':>8}")
    for r in rows:
        mark = "* " if r.version == promoted else "  "
        click.echo(
            f"{mark}{r.version:<18}{r.registration.get('registered_at')!s:<27}"
            f"{r.parent or '-':<18}{_metric(r, 'map50'):>8}{_metric(r, 'count_accuracy'):>8}"
        )
    click.echo("(* promoted)" if promoted else "(nothing promoted: workers use the bundled model)")


@click.command("show")
@click.argument("version", default=PROMOTED)
@registry_option
@click.pass_context
def show(ctx: click.Context, version: str, registry: Path | None) -> None:
    """One version's registration, card and promotion history (default: the promoted one)."""
    reg = open_registry(ctx, registry)
    entry = reg.get(version)
    history = [p.__dict__ for p in reg.history() if p.version == entry.version]
    card = {k: v for k, v in entry.card.items() if k != "classes"}
    out = {
        "version": entry.version,
        "promoted": entry.version == reg.promoted(),
        "path": str(entry.model_path),
        "registration": entry.registration,
        "card": card,
        "classes": len(entry.card.get("classes") or []),
        "promotions": history,
    }
    click.echo(json.dumps(out, indent=1))


@click.command("promote")
@click.argument("version")
@click.option("--reason", default="", help="Recorded with the promotion.")
@click.option("--force", is_flag=True, help="Skip the promotion gate (recorded as forced).")
@click.option("--gate-images", type=int, default=300, show_default=True)
@click.option("--gate-seed", type=int, default=0, show_default=True)
@click.option(
    "--verified",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    multiple=True,
    help="An exported review queue whose verified frames the gate also scores.",
)
@click.option("--max-slowdown", type=float, default=1.25, show_default=True)
@click.option(
    "--shadow-report",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="The JSON of `models shadow-report --json` for VERSION as a shadow: judged too.",
)
@click.option(
    "--shadow",
    "from_shadow",
    is_flag=True,
    help="Judge the shadow deployment too, read from cart.detections.shadow now: the frames "
    "where VERSION ran beside the promoted model (scored on --verified frames as well). "
    "Refused if it has seen none.",
)
@click.option("--shadow-idle", type=float, default=2.0, show_default=True, help="Seconds of quiet.")
@registry_option
@click.pass_context
def promote(
    ctx: click.Context,
    version: str,
    reason: str,
    force: bool,
    gate_images: int,
    gate_seed: int,
    verified: tuple[Path, ...],
    max_slowdown: float,
    shadow_report: Path | None,
    from_shadow: bool,
    shadow_idle: float,
    registry: Path | None,
) -> None:
    """Make VERSION the one workers load, if it passes the gate: no worse
    than the promoted model on held-out scenes (and verified review frames), and not slower
    than --max-slowdown times it; with --shadow (or a saved --shadow-report), likewise online,
    where it ran beside the promoted model on the workers."""
    from cartstream.models.catalog import Catalog
    from cartstream.models.promotion_gate import GateBounds, run_gate, with_online

    if from_shadow and shadow_report is not None:
        raise click.UsageError("give --shadow or --shadow-report, not both")
    reg = open_registry(ctx, registry)
    candidate = reg.get(version)
    champion = reg.promoted()
    verdict = None
    if champion is not None and champion != candidate.version and not force:
        bounds = GateBounds(max_slowdown=max_slowdown)
        result = run_gate(
            reg.model_path(champion),
            candidate.model_path,
            Catalog.load(cli_settings(ctx).catalog_path),
            images=gate_images,
            seed=gate_seed,
            verified=verified,
            bounds=bounds,
        )
        if shadow_report is not None:
            result = with_online(result, json.loads(shadow_report.read_text()), bounds)
        elif from_shadow:
            online = _compare_shadow(ctx, verified, shadow_idle, (champion, candidate.version))
            result = with_online(result, online.as_dict(), bounds)
        verdict = result.as_dict()
        for s in result.sets:
            click.echo(f"{s.name}: champion {s.champion}, candidate {s.candidate}")
        click.echo(
            f"ms per frame: champion {result.champion_ms:.2f}, candidate {result.candidate_ms:.2f}"
        )
        if result.online is not None:
            o = result.online
            click.echo(
                f"shadow deployment: {o.get('frames')} frames, agreement {o.get('agreement')}, "
                f"accuracy on {o.get('verified_frames')} verified frames: champion "
                f"{o.get('champion_accuracy_on_verified')}, candidate "
                f"{o.get('candidate_accuracy_on_verified')}; ms p50/p99: champion "
                f"{o.get('champion_ms_p50_p99')}, candidate {o.get('candidate_ms_p50_p99')}"
            )
        if not result.passed:
            raise click.ClickException(
                f"{candidate.version} refused by the promotion gate: " + "; ".join(result.refusals)
            )
    done = reg.promote(
        candidate.version, reason=reason or ("forced" if force else ""), gate=verdict
    )
    click.echo(f"{done.version} promoted (was {done.previous or 'nothing'}); {FOLLOW}")


@click.command("rollback")
@click.option("--reason", default="", help="Recorded with the rollback.")
@registry_option
@click.pass_context
def rollback(ctx: click.Context, reason: str, registry: Path | None) -> None:
    """Promote again the version promoted before the current one."""
    reg = open_registry(ctx, registry)
    done = reg.rollback(reason=reason)
    click.echo(f"rolled back to {done.version} (from {done.previous}); {FOLLOW}")


def _compare_shadow(
    ctx: click.Context,
    verified: tuple[Path, ...],
    idle: float,
    pair: tuple[str, str] | None = None,
) -> ShadowReport:
    """The shadow deployment as cart.detections.shadow holds it now (only the frames of
    `pair`, champion and candidate, when given)."""
    from cartstream.services.kafka.tail import read_topic
    from cartstream.services.tools.shadow_report import compare, verified_labels

    settings = cli_settings(ctx)
    topic = settings.topics.detections_shadow
    read = (r for r, _ in read_topic(settings, topic, idle_timeout_s=idle))
    records = cast(Iterator[ShadowDetection], read)
    if pair is not None:
        records = (r for r in records if (r["champion_version"], r["candidate_version"]) == pair)
    return compare(records, verified_labels(verified), settings.detect.score_threshold)


@click.command("shadow-report")
@click.option(
    "--verified",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    multiple=True,
    help="An exported review queue: its verified frames score both models.",
)
@click.option("--idle", type=float, default=2.0, show_default=True, help="Seconds of quiet.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def shadow_report(
    ctx: click.Context, verified: tuple[Path, ...], idle: float, as_json: bool
) -> None:
    """Compare a shadow candidate with the champion on the frames both saw (agreement,
    confusions, accuracy on verified frames, latency), from cart.detections.shadow."""
    out = _compare_shadow(ctx, verified, idle).as_dict()
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    click.echo(f"{out['frames']} frames seen by both models")
    for pair in out["models"]:
        click.echo(
            f"  champion {pair['champion']}  candidate {pair['candidate']}: {pair['frames']}"
        )
    click.echo(f"agreement (same SKUs at the operating threshold): {out['agreement']:.4f}")
    for c in out["confusions"]:
        click.echo(f"  champion {c['champion']:<22} candidate {c['candidate']:<22} {c['frames']}x")
    if out["verified_frames"]:
        click.echo(
            f"on {out['verified_frames']} verified frames: champion "
            f"{out['champion_accuracy_on_verified']:.4f}, candidate "
            f"{out['candidate_accuracy_on_verified']:.4f}"
        )
    click.echo(
        f"ms per frame p50/p99: champion {out['champion_ms_p50_p99']}, "
        f"candidate {out['candidate_ms_p50_p99']}"
    )


COMMANDS = (register, list_models, show, promote, rollback, shadow_report)
