"""`cartstream bench ...`: benchmarks of the detector, serving, tracing, cart auth, TLS, the
pipeline under load and the cart screens; each prints a table and writes it under docs/."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

F = TypeVar("F", bound=Callable[..., Any])


def out_option(default: str = "docs/benchmarks.md") -> Callable[[F], F]:
    """Where a bench writes its table."""
    return click.option(
        "--out", type=click.Path(path_type=Path), default=Path(default), show_default=True
    )


def admin_database_option(what: str) -> Callable[[F], F]:
    """The Postgres server where `what` creates its own database."""
    return click.option(
        "--admin-database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        show_default=True,
        help=f"A Postgres server where {what} creates its own database.",
    )


WORK_OPTION = click.option(
    "--work", type=click.Path(path_type=Path), default=Path("cartstream-bench")
)


@click.group()
def bench() -> None:
    """Benchmarks (they print a table and write it under docs/)."""


@bench.command("detector")
@click.option("--batches", default="1,8,32,128", show_default=True)
@click.option(
    "--agent-frames",
    type=int,
    default=1024,
    show_default=True,
    help="Frames through the broker per batch size (0: bare loop only).",
)
@click.option("--seconds", type=float, default=5.0, show_default=True)
@out_option()
def bench_detector(batches: str, agent_frames: int, seconds: float, out: Path) -> None:
    """Frames/s at each batch size: bare onnxruntime loop vs the detect agent via the broker."""
    import tempfile

    from cartstream.services.tools.bench import run_bench, table

    sizes = [int(b) for b in batches.split(",") if b.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_bench(sizes, agent_frames, seconds, out, Path(tmp))
    click.echo(table(rows))
    click.echo(f"written to {out}")
    if not rows:
        sys.exit(1)


@bench.command("serving")
@click.option("--batch", type=int, default=8, show_default=True, help="Frames per request.")
@click.option("--clients", default="1,4", show_default=True)
@click.option("--seconds", type=float, default=8.0, show_default=True)
@click.option("--max-batch", type=int, default=32, show_default=True)
@click.option("--max-wait-ms", type=float, default=5.0, show_default=True)
@out_option()
def bench_serving(
    batch: int, clients: str, seconds: float, max_batch: int, max_wait_ms: float, out: Path
) -> None:
    """Detector frames/s in process vs over the Open Inference Protocol (gRPC and HTTP)."""
    from cartstream.services.tools.bench_serving import run_serving_bench, table, write_report

    counts = [int(c) for c in clients.split(",") if c.strip()]
    rows = run_serving_bench(batch, counts, seconds, max_batch, max_wait_ms)
    write_report(out, rows, max_batch, max_wait_ms)
    click.echo(table(rows))
    click.echo(f"written to {out}")


@bench.command("tracing")
@click.option("--carts", type=int, default=6, show_default=True)
@click.option("--sessions", type=int, default=5, show_default=True, help="Sessions per cart.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Runs per setting.")
@click.option("--seed", type=int, default=11, show_default=True)
@out_option("docs/tracing-overhead.md")
def bench_tracing(carts: int, sessions: int, repeats: int, seed: int, out: Path) -> None:
    """Events/s and p99 latency with tracing off vs on (whole demo runs, alternating)."""
    import tempfile

    from cartstream.services.tools import bench_tracing as bt

    with tempfile.TemporaryDirectory() as tmp:
        trials = bt.run(carts, sessions, repeats, seed, Path(tmp))
    bt.write_report(out, trials, carts, sessions, repeats, seed)
    click.echo(bt.table(trials))
    click.echo(f"written to {out}")


@bench.command("auth")
@click.option("--carts", type=int, default=4, show_default=True)
@click.option("--sessions", type=int, default=3, show_default=True, help="Sessions per cart.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Runs per setting.")
@out_option("docs/auth-overhead.md")
@click.option("--demo/--no-demo", default=True, show_default=True, help="End-to-end runs too.")
def bench_auth(carts: int, sessions: int, repeats: int, out: Path, demo: bool) -> None:
    """Events/s with cart signature verification off vs enforced (in memory and end to end)."""
    import tempfile

    from cartstream.services.tools import bench_auth as ba

    with tempfile.TemporaryDirectory() as tmp:
        trials = ba.run(carts, sessions, repeats, Path(tmp) if demo else None)
    ba.write_report(out, trials, carts, sessions, repeats)
    click.echo(ba.table(trials))
    click.echo(f"written to {out}")


@bench.command("tls")
@click.option("--frames", type=int, default=2000, show_default=True)
@click.option("--packets", type=int, default=20000, show_default=True)
@click.option("--frame-kb", type=int, default=24, show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True)
@out_option("docs/tls.md")
def bench_tls(frames: int, packets: int, frame_kb: int, repeats: int, out: Path) -> None:
    """Producer and consumer throughput over TLS (a terminator) against plaintext."""
    import tempfile

    from cartstream.services.tools import bench_tls as bt

    with tempfile.TemporaryDirectory() as tmp:
        trials = bt.run(frames, packets, frame_kb, repeats, Path(tmp))
    command = (
        f"cartstream bench tls --frames {frames} --packets {packets} --frame-kb {frame_kb} "
        f"--repeats {repeats}"
    )
    bt.write_report(out, trials, command)
    click.echo(bt.table(trials))
    click.echo(f"written to {out}")


@bench.command("broker")
@click.option("--sizes", default="0,40000,120000,240000", show_default=True, help="Batches held.")
@click.option("--seconds", type=float, default=4.0, show_default=True, help="Per measure.")
@out_option("docs/broker-cost.md")
def bench_broker(sizes: str, seconds: float, out: Path) -> None:
    """The embedded broker's CPU per request as its log grows."""
    import tempfile

    from cartstream.services.tools import bench_broker as bb

    counts = [int(s) for s in sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        steps = bb.run(counts, seconds, Path(tmp))
    bb.write_report(out, steps, f"cartstream bench broker --sizes {sizes} --seconds {seconds:g}")
    click.echo(bb.table(steps))
    click.echo(f"written to {out}")


@bench.command("faust")
@click.option(
    "--records", type=click.IntRange(min=1), default=100000, show_default=True, help="Per pass."
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Passes of each kind.",
)
@out_option()
def bench_faust(records: int, repeats: int, out: Path) -> None:
    """CPU a record costs a consumer doing nothing: aiokafka alone, then a Faust agent."""
    import tempfile

    from cartstream.services.tools import bench_faust as bf

    with tempfile.TemporaryDirectory() as tmp:
        passes = bf.run(records, repeats, Path(tmp))
    bf.write_report(out, passes, f"cartstream bench faust --records {records} --repeats {repeats}")
    click.echo(bf.table(passes))
    click.echo(f"written to {out}")


@bench.command("hostile")
@click.option("--garbage", type=int, default=20000, show_default=True, help="Malformed records.")
@click.option("--flood", type=int, default=10000, show_default=True, help="Frames from one cart.")
@admin_database_option("the bench")
@out_option("docs/hostile-drain.md")
def bench_hostile(garbage: int, flood: int, admin_database_url: str, out: Path) -> None:
    """Seconds one idle worker takes to work off a burst of hostile records."""
    import tempfile

    from cartstream.services.tools import bench_hostile as bh

    with tempfile.TemporaryDirectory() as tmp:
        drains = bh.run(garbage, flood, Path(tmp), admin_database_url)
    bh.write_report(out, drains, f"cartstream bench hostile --garbage {garbage} --flood {flood}")
    click.echo(bh.table(drains))
    click.echo(f"written to {out}")


@bench.command("stages")
@click.option("--carts", type=int, default=100, show_default=True)
@click.option("--seconds", type=float, default=30.0, show_default=True, help="Of cart traffic.")
@click.option(
    "--repeats", type=int, default=3, show_default=True, help="Passes; the fastest counts."
)
@out_option()
def bench_stages(carts: int, seconds: float, repeats: int, out: Path) -> None:
    """Microseconds a record of the stateful stages' own work, in process (no Faust, no broker)."""
    from cartstream.services.tools import bench_stages as bs

    costs = bs.run(carts, seconds, repeats)
    command = f"cartstream bench stages --carts {carts} --seconds {seconds:g} --repeats {repeats}"
    bs.write_report(out, costs, command)
    click.echo(bs.table(costs))
    click.echo(f"written to {out}")


@bench.command("pipeline")
@click.option("--modes", default="reasoning,full", show_default=True)
@click.option("--carts", "carts_list", default="100,300,1000,3000", show_default=True)
@click.option("--full-carts", default="100,300", show_default=True, help="Carts in full mode.")
@click.option("--seconds", type=float, default=60.0, show_default=True, help="Per point.")
@admin_database_option("each point")
@out_option()
@WORK_OPTION
@click.option(
    "--profile", "profile_carts", default="", help="py-spy the worker at these points (carts)."
)
@click.option(
    "--workers",
    "workers_list",
    default="1",
    show_default=True,
    help="Worker processes in one group, per point (e.g. 1,2: every point with 1, then with 2).",
)
def bench_pipeline(
    modes: str,
    carts_list: str,
    full_carts: str,
    seconds: float,
    admin_database_url: str,
    out: Path,
    work: Path,
    profile_carts: str,
    workers_list: str,
) -> None:
    """N live carts at real-time pace on one worker (or several in one group): latency per hop,
    lag, CPU, saturation."""
    from cartstream.core.settings import Settings
    from cartstream.services.tools import bench_pipeline as bp
    from cartstream.services.tools.load.recording import Mode

    profiled = {int(n) for n in profile_carts.split(",") if n.strip()}
    points = []
    counts = [int(n) for n in workers_list.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        raise click.BadParameter("worker counts of 1 or more", param_hint="--workers")
    for mode in [m.strip() for m in modes.split(",") if m.strip()]:
        sizes = full_carts if mode == "full" else carts_list
        for workers, carts in [(w, int(n)) for w in counts for n in sizes.split(",") if n.strip()]:
            click.echo(f"{mode}: {carts} carts, {workers} worker(s), for {seconds:.0f} s ...")
            kind: Mode = "full" if mode == "full" else "reasoning"
            point = bp.run_point(
                Settings(),
                kind,
                carts,
                seconds,
                work / f"{mode}-{carts}-{workers}w",
                admin_database_url,
                profile=carts in profiled,
                workers=workers,
            )
            points.append(point)
            click.echo("\n".join(bp.table([point])[2:]))
    command = " ".join(["cartstream", "bench", "pipeline", *sys.argv[3:]])
    click.echo(bp.report(points, command, out))
    click.echo(f"written to {out}")


@bench.command("screen")
@click.option("--carts", type=int, default=100, show_default=True)
@click.option(
    "--mode",
    type=click.Choice(["reasoning", "full"]),
    default="reasoning",
    show_default=True,
    help="reasoning: detections replayed (detect elsewhere); full: the worker detects on CPU.",
)
@click.option("--seconds", type=float, default=90.0, show_default=True)
@admin_database_option("the run")
@out_option()
@WORK_OPTION
def bench_screen(
    carts: int, mode: str, seconds: float, admin_database_url: str, out: Path, work: Path
) -> None:
    """Weight settle -> cart screen (over the console's push gateway) at N live carts."""
    from cartstream.core.settings import Settings
    from cartstream.services.tools import bench_pipeline as bp
    from cartstream.services.tools import bench_screen as bs
    from cartstream.services.tools.load.recording import Mode

    watch = bs.ScreenWatch()
    point = bp.run_point(
        Settings(),
        cast(Mode, mode),  # it was always "full", whatever --mode said
        carts,
        seconds,
        work / f"screen-{carts}",
        admin_database_url,
        screens=watch,
    )
    spreads = {name: bs.spread(v) for name, v in watch.latencies().items()}
    command = " ".join(["cartstream", "bench", "screen", *sys.argv[3:]])
    text = bs.report(mode, carts, spreads, point, watch, command)
    bs.write(out, mode, text)
    click.echo(text)
    click.echo(f"written to {out}")
