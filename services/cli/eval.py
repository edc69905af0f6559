"""`cartstream eval`: simulated sessions through the real pipeline, scored against ground truth.

Each mode is one full run of `cartstream demo` machinery (embedded broker unless `--bootstrap`,
a worker with every role, carts publishing as fast as the broker takes them on a back-dated
clock) with `reason.mode` set, then the scores of `services/scoring.py`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from cartstream.core.settings import Settings
from cartstream.services.cli.context import cli_settings

MODES = ("fused", "vision", "weight")
# Carts publish as fast as the broker takes them, so the detect stage runs minutes behind the
# weights; in real time it is milliseconds behind. Nothing is lost in a simulated run, so the
# deadlines that guard against lost frames, packets and reviews are stretched rather than let
# the backlog decide steps without their frames.
EVAL_WORKER_SETTINGS = (
    ("CARTSTREAM_REASON__VISION_WAIT_S", "900"),
    ("CARTSTREAM_REASON__CHECKOUT_WAIT_S", "900"),
    ("CARTSTREAM_REVIEW_WAIT_S", "900"),
)


def split_sessions(total: int, max_carts: int = 10) -> tuple[int, int]:
    """(carts, sessions per cart) with exactly `total` sessions over as many carts as divide it."""
    carts = max(d for d in range(1, max_carts + 1) if total % d == 0)
    return carts, total // carts


def evaluate_mode(
    settings: Settings,
    mode: str,
    sessions: int,
    seed: int,
    bootstrap: str | None,
    run_dir: Path | None,
    quiet: bool,
    anomalies: bool = False,
) -> dict[str, Any]:
    from cartstream.services.tools.demo import DemoConfig, run_demo

    carts, per_cart = split_sessions(sessions)
    config = DemoConfig(
        carts=carts,
        sessions=per_cart,
        seed=seed,
        run_dir=run_dir / mode if run_dir else None,
        timeout_s=1800.0,
        bootstrap=bootstrap,
        speed=0.0,
        mode=mode,
        worker_settings=EVAL_WORKER_SETTINGS,
        anomalies=anomalies,
    )
    summary = run_demo(config, settings, Console(stderr=True, quiet=quiet))
    extra = summary.anomaly_scores if anomalies else {}
    return {
        "mode": mode,
        "seed": seed,
        **summary.accuracy,
        **{k: v for k, v in extra.items() if k != "sessions"},
        "checkouts_persisted": summary.checkouts_persisted,
        "seconds": summary.seconds,
        "events": summary.events,
        "frames_detected": summary.frames_detected,
    }


def report_markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = [
        "| mode | sessions | checkouts | cAcc | ACD | precision | recall | wall time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['mode']} | {r['sessions']} | {r['checkouts']} | {r['cacc']:.4f} "
            f"| {r['acd']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} | {r['seconds']:.0f} |"
        )
    tags = list(results[0]["per_scenario"]) if results else []
    lines += [
        "",
        "cAcc per scenario (sessions that contain the case; checkouts in brackets):",
        "",
        "| scenario | " + " | ".join(r["mode"] for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for tag in tags:
        cells = []
        for r in results:
            s = r["per_scenario"][tag]
            cells.append("-" if s["cacc"] is None else f"{s['cacc']:.3f} ({s['checkouts']})")
        lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    return f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}.\n\n" + "\n".join(lines) + "\n"


def anomaly_markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = [f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}.", ""]
    for r in results:
        lines += [
            f"Reasoning `{r['mode']}`, {r['sessions']} sessions ({r['honest_sessions']} with "
            f"nothing injected): **{r['false_alarms_per_1000']} false alarms per 1 000 honest "
            f"sessions** ({r['false_alarms']} alerts: {r['false_alarms_by_kind'] or 'none'}); "
            f"basket cAcc {r['cacc']}.",
            "",
            "| kind | injected sessions | sessions alerted | precision | recall |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind, k in r["per_kind"].items():
            lines.append(
                f"| {kind} | {k['support']} | {k['raised']} | {k['precision']} | {k['recall']} |"
            )
        lines.append("")
    return "\n".join(lines)


@click.command("eval")
@click.option("--sessions", type=int, default=500, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--mode",
    type=click.Choice([*MODES, "all"]),
    default="fused",
    show_default=True,
    help="Which evidence reasoning may use; all: one run per mode.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON on stdout.")
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a Markdown table of the modes run (e.g. docs/accuracy-table.md).",
)
@click.option(
    "--anomalies",
    is_flag=True,
    help="Inject loss-prevention cases (3 %% of sessions per kind) and score the alerts.",
)
@click.option("--run-dir", type=click.Path(path_type=Path), default=None)
@click.pass_context
def evaluate(
    ctx: click.Context,
    sessions: int,
    seed: int,
    mode: str,
    as_json: bool,
    report: Path | None,
    anomalies: bool,
    run_dir: Path | None,
) -> None:
    """Score basket reasoning (or, with --anomalies, the alerts) on simulated sessions run
    through the real pipeline. Without --anomalies the shoppers are honest."""
    if sessions < 1:
        raise click.BadParameter("needs at least one session", param_hint="--sessions")
    bootstrap = ctx.find_root().params.get("bootstrap")
    modes = MODES if mode == "all" else (mode,)
    results = [
        evaluate_mode(cli_settings(ctx), m, sessions, seed, bootstrap, run_dir, as_json, anomalies)
        for m in modes
    ]
    command = f"cartstream eval --sessions {sessions} --seed {seed} --mode {mode}"
    command += " --anomalies" if anomalies else ""
    text = anomaly_markdown(results, command) if anomalies else report_markdown(results, command)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(text)
    if as_json:
        out = results[0] if len(results) == 1 else {"modes": results}
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(text)
    if any(r["checkouts_persisted"] < r["checkouts"] for r in results):
        sys.exit(1)
