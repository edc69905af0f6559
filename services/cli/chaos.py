"""`cartstream chaos`: the pipeline under a seeded schedule of faults, verified against a
fault-free run of the same carts (see services/tools/chaos)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import click

from cartstream.services.cli.context import cli_settings, console


def stop_on_sigterm() -> None:
    """SIGTERM (a process manager, a CI time-out) unwinds like Ctrl-C, so every process the
    run started is stopped by its `finally`."""
    import signal

    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)


@click.command("chaos")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--carts", type=int, default=6, show_default=True)
@click.option("--sessions", type=int, default=4, show_default=True, help="Sessions per cart.")
@click.option("--speed", type=float, default=10.0, show_default=True, help="x real time.")
@click.option("--topology", type=click.Choice(["group", "split"]), default="group")
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--kills", type=int, default=3, show_default=True)
@click.option("--pauses", type=int, default=1, show_default=True)
@click.option("--db-outages", type=int, default=1, show_default=True)
@click.option("--db-outage-s", type=float, default=30.0, show_default=True)
@click.option("--broker-cuts", type=int, default=1, show_default=True)
@click.option("--broker-cut-s", type=float, default=None, help="Default: 10-30 s at random.")
@click.option("--broker-restarts", type=int, default=0, show_default=True)
@click.option("--fuzz", "fuzz_records", type=int, default=0, show_default=True)
@click.option(
    "--admin-database-url",
    default="postgresql://postgres@127.0.0.1:5432/postgres",
    show_default=True,
    help="A Postgres server where each run creates its own database.",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("cartstream-chaos"))
@click.option("--deadline", type=float, default=600.0, show_default=True, help="Seconds to wait.")
@click.option("--worker-log-level", default="warning", show_default=True)
@click.option(
    "--hold",
    "hold_s",
    type=float,
    default=0.0,
    help="Keep the chaos run's broker, database and workers up this long after it.",
)
@click.option("--report", type=click.Path(path_type=Path), default=None, help="docs/reliability.md")
@click.pass_context
def chaos(
    ctx: click.Context,
    seed: int,
    carts: int,
    sessions: int,
    speed: float,
    topology: str,
    workers: int,
    kills: int,
    pauses: int,
    db_outages: int,
    db_outage_s: float,
    broker_cuts: int,
    broker_cut_s: float | None,
    broker_restarts: int,
    fuzz_records: int,
    admin_database_url: str,
    out: Path,
    deadline: float,
    worker_log_level: str,
    hold_s: float,
    report: Path | None,
) -> None:
    """Kill, pause, cut and flood a running pipeline; exit 1 unless nothing was lost."""
    from cartstream.services.tools.chaos.report import write_report
    from cartstream.services.tools.chaos.run import ChaosConfig, run_chaos
    from cartstream.services.tools.chaos.schedule import Shape
    from cartstream.services.tools.chaos.verify import summarize

    shape = Shape(
        kills=kills,
        pauses=pauses,
        db_outages=db_outages,
        db_outage_s=db_outage_s,
        broker_cuts=broker_cuts,
        broker_restarts=broker_restarts,
        workers=workers if topology == "group" else workers * 2 + 1,
    )
    if broker_cut_s is not None:
        shape = replace(shape, broker_cut_s=(broker_cut_s, broker_cut_s))
    config = ChaosConfig(
        folder=out,
        admin_database_url=admin_database_url,
        seed=seed,
        carts=carts,
        sessions=sessions,
        speed=speed,
        topology="split" if topology == "split" else "group",
        workers=workers,
        shape=shape,
        fuzz_records=fuzz_records,
        deadline_s=deadline,
        worker_log_level=worker_log_level,
        hold_s=hold_s,
    )
    stop_on_sigterm()
    result = run_chaos(config, cli_settings(ctx), console.print)
    for name, value in summarize(result.verdict):
        console.print(f"{name:<40} {value}")
    out.mkdir(parents=True, exist_ok=True)
    summary = write_report(result, out, report)
    console.print(f"summary: {summary}")
    if not result.verdict.passed:
        console.print(json.dumps(result.verdict.to_json()["lost"]))
        sys.exit(1)
