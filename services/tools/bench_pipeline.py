"""`cartstream bench pipeline`: N live carts at real-time pace against one worker, per mode.

Per point (mode, N): a fresh broker and database, one worker (reasoning mode: reason, anomalies,
reconcile and persist, fed with the committed detector's detections; full mode: every role, fed
with frames), and the load generator in its own process (`load/generator.py`). Measured: the
generator's send rate and lag behind schedule, latency per hop (`load/measure.py`), consumer
lag once a second, and the CPU and RSS of worker, broker and generator. A point keeps up when
the generator kept pace, lag drained within `DRAIN_S` after the last send, and p99 of its
target hop is under the target; the saturation point is the largest N that keeps up.
Prints the table and writes it, with a latency-vs-load plot, into docs/benchmarks.md.
"""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cartstream.core.settings import Settings
from cartstream.services.kafka.broker import EmbeddedBroker
from cartstream.services.kafka.topics import ensure_tick_topics, ensure_topics
from cartstream.services.tools.bench_screen import ScreenWatch
from cartstream.services.tools.chaos.run import drop_database, fresh_database
from cartstream.services.tools.doc_sections import write_section
from cartstream.services.tools.harness import WorkerProcess, consumed_topics, worker_env
from cartstream.services.tools.load.generator import LoadConfig, LoadStats
from cartstream.services.tools.load.generator import main as generator_main
from cartstream.services.tools.load.measure import HOPS, Sampler, Spread, hop_latencies
from cartstream.services.tools.load.profile import Hot, inclusive
from cartstream.services.tools.load.profile import start as start_profile
from cartstream.services.tools.load.profile import summarize as profile_summary
from cartstream.services.tools.load.recording import Mode
from cartstream.streams.app import group_id, parse_roles
from cartstream.streams.worker import stateful_roles

DRAIN_S = 30.0
EDGE_S = 10.0
REBALANCE_S = 8.0  # Tansu answers a join after session_timeout/2 (3 s under `tansu`), twice
ROLES: dict[str, str] = {"reasoning": "reason,anomalies,reconcile,persist", "full": "all"}
# the targets: p99 of the hop that matters per mode, in ms
TARGET_MS: dict[str, tuple[str, float]] = {
    "reasoning": (HOPS[1], 150.0),
    "full": (HOPS[1], 300.0),
}


@dataclass
class Point:
    mode: str
    carts: int
    load: LoadStats
    # cart records the workers consumed per second while the load was sent: sent minus the lag
    # at the end of sending (the lag counts their other inputs too, so it is a lower bound)
    processed_per_s: float
    hops: dict[str, Spread]
    lag_max: int
    lag_end: int | None  # lag when the last record had been sent
    drained_s: float | None  # from the last send to lag 0 (None: not within DRAIN_S)
    # mean share of one core while sending; the broker's also over the first and the last
    # EDGE_S of sending (`broker_first`, `broker_last`)
    cpu: dict[str, float]
    rss_mb: dict[str, float]
    lag_series: list[tuple[float, int | None]]
    workers: int = 1  # in one consumer group; cpu["worker"] is their sum, rss_mb the largest
    templates: int = 20  # carts simulated, whose copies make up the load
    hot: list[Hot] = field(default_factory=list)  # py-spy: the worker's hottest functions
    shares: dict[str, float] = field(default_factory=dict)  # of its samples, per suspect

    @property
    def series(self) -> str:
        """The mode and the worker count: the points a saturation and a plot line are of."""
        return f"{self.mode}, {self.workers} worker{'s' if self.workers > 1 else ''}"

    @property
    def target(self) -> tuple[str, float]:
        return TARGET_MS[self.mode]

    @property
    def kept_up(self) -> bool:
        hop, limit = self.target
        p99 = self.hops[hop].p99
        return (
            self.load.kept_pace and self.drained_s is not None and p99 is not None and p99 < limit
        )


# where the issue suspects the time goes: share of the worker's samples with each on the stack
SUSPECTS: dict[str, tuple[str, ...]] = {
    "tracing (OpenTelemetry spans, span file)": ("opentelemetry", "core/telemetry.py", "spanfile"),
    "Avro encode/decode": ("schemas/codec.py", "fastavro"),
    "changelog/table writes": ("faust/tables",),
    "tick topic": ("_send_ticks", "_on_tick"),
    "publishing (aiokafka producer)": ("aiokafka/producer",),
    "fetching (aiokafka consumer)": ("aiokafka/consumer",),
    "JPEG decoding": ("decode_jpegs",),
    "inference (onnxruntime)": ("onnxruntime",),
    "logging": ("logging/__init__",),
    "JSON state codec": ("json/",),
}


def run_point(
    settings: Settings,
    mode: Mode,
    carts: int,
    seconds: float,
    folder: Path,
    admin_url: str,
    profile: bool = False,
    screens: ScreenWatch | None = None,
    workers: int = 1,
    templates: int = 20,
) -> Point:
    """`screens`: also follow every cart's screen through a console (`bench screen`);
    `workers`: that many worker processes in one group (py-spy follows the first); `templates`:
    carts simulated, whose copies make up the load (fewer build faster: the CI smoke)."""
    folder.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=folder / "broker.log") as broker:
        app_id = f"bench-{mode}-{carts}-{uuid.uuid4().hex[:6]}"
        s = settings.with_overrides(
            kafka={**settings.kafka.model_dump(), "bootstrap_servers": broker.bootstrap},
            broker_profile="tansu",
            app_id=app_id,
        )
        roles = parse_roles(ROLES[mode])
        ensure_topics(s)
        ensure_tick_topics(s, stateful_roles(roles))
        database = fresh_database(admin_url, "bench")
        names = ["worker"] if workers == 1 else [f"worker-{i}" for i in range(workers)]
        ready = {n: folder / f"{n}.ready" for n in names}
        procs = {
            n: WorkerProcess(
                worker_env(s, app_id, database, ready[n]), folder / f"{n}.log", roles=ROLES[mode]
            )
            for n in names
        }
        worker = procs[names[0]]
        generator: Any = None
        sampler: Sampler | None = None
        try:
            for n, proc in procs.items():
                proc.wait_ready(ready[n], timeout_s=240)
            if workers > 1:  # the group's partitions spread over every member before the load
                time.sleep(REBALANCE_S)
            load = LoadConfig(
                broker.bootstrap, carts, seconds, mode, str(folder / "load"), templates=templates
            )
            generator = multiprocessing.get_context("spawn").Process(
                target=generator_main, args=(load,), name="load-generator"
            )
            generator.start()
            pids = {n: p.proc.pid for n, p in procs.items()}
            pids.update(broker=broker.pid, generator=generator.pid)
            groups = {group_id(s, roles): consumed_topics(s, roles)}
            sampler = Sampler(s, groups, lambda: pids)
            sampler.start()
            spy = _profile_when_armed(folder, worker.proc.pid, seconds) if profile else None
            if screens is not None:
                screens.start(folder / "load", s, database)
            generator.join(timeout=seconds + 900)
            if spy is not None:
                spy.wait(timeout=60)
            if generator.exitcode != 0:
                raise RuntimeError(f"load generator failed (exit {generator.exitcode})")
            sent_at = time.monotonic() - sampler.started
            drained = _drain(sampler, sent_at)
            if screens is not None:
                screens.stop()
            stats = LoadStats(**json.loads((folder / "load" / "stats.json").read_text()))
            since_ms = stats.start_ms
            hops = hop_latencies(s, database, since_ms, detects=mode == "full")
        finally:
            if screens is not None:
                screens.stop()
            if sampler is not None:
                sampler.stop()
            if generator is not None and generator.is_alive():
                generator.kill()
            for proc in procs.values():
                proc.stop()
            drop_database(admin_url, database)
    raw = folder / "profile.txt"
    hot = profile_summary(raw) if profile and raw.exists() else []
    shares = inclusive(raw, SUSPECTS) if hot else {}
    begin = sent_at - stats.seconds
    lags = [(t.t_s, t.lag) for t in sampler.ticks]
    end_lag = next((lag for t, lag in reversed(lags) if t <= sent_at and lag is not None), None)
    return Point(
        mode=mode,
        carts=carts,
        load=stats,
        processed_per_s=round(max(0, stats.records - (end_lag or 0)) / max(1e-3, stats.seconds), 1),
        hops=hops,
        lag_max=max((lag for _, lag in lags if lag is not None), default=0),
        lag_end=end_lag,
        drained_s=drained,
        cpu={
            "worker": round(sum(sampler.mean_cpu(n, begin, sent_at) for n in names), 2),
            **{n: sampler.mean_cpu(n, begin, sent_at) for n in ("broker", "generator")},
            # the broker's cost grows with the log it holds (docs/broker-cost.md)
            "broker_first": sampler.mean_cpu("broker", begin, begin + EDGE_S),
            "broker_last": sampler.mean_cpu("broker", sent_at - EDGE_S, sent_at),
        },
        rss_mb={
            "worker": max(sampler.max_rss(n) for n in names),
            **{n: sampler.max_rss(n) for n in ("broker", "generator")},
        },
        workers=workers,
        templates=templates,
        lag_series=[(round(t - begin, 1), lag) for t, lag in lags],
        hot=hot,
        shares=shares,
    )


def _profile_when_armed(folder: Path, pid: int, seconds: float) -> Any:
    """py-spy on the worker from the generator's first send, for the point's length."""
    armed = folder / "load" / "armed.json"
    deadline = time.monotonic() + 900
    while not armed.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    start_ms = json.loads(armed.read_text())["start_ms"]
    time.sleep(max(0.0, start_ms / 1000.0 - time.time()))
    return start_profile(pid, seconds, folder / "profile.txt")


def _drain(sampler: Sampler, sent_at: float) -> float | None:
    """Seconds from the last send until the lag probe read 0 (None: not within DRAIN_S)."""
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        zero = next((t for t in sampler.ticks if t.t_s >= sent_at and t.lag == 0), None)
        if zero is not None:
            return round(zero.t_s - sent_at, 1)
        time.sleep(0.5)
    return None


def point_json(p: Point) -> dict[str, Any]:
    out = asdict(p)
    out["kept_up"] = p.kept_up
    return out


SECTION = "pipeline"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def table(points: list[Point]) -> list[str]:
    head = (
        "| mode | carts | workers | events/s sent | consumed/s | generator late p99 (ms) "
        "| produce→detection p50 / p99 "
        "| last packet→basket change p50 / p95 / p99 / max | checkout→row p50 / p99 "
        "| lag max / at end | drained after (s) | CPU worker / broker / generator (cores) "
        "| broker CPU first → last 10 s "
        "| worker RSS (MB) | keeps up |"
    )
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for p in points:
        d, b, c = (p.hops[h] for h in HOPS)
        rows.append(
            f"| {p.mode} | {p.carts:,} | {p.workers} | {p.load.send_rate:,.0f} "
            f"| {p.processed_per_s:,.0f} "
            f"| {p.load.late_ms_p99:,.0f} "
            f"| {_ms(d.p50)} / {_ms(d.p99)} "
            f"| {_ms(b.p50)} / {_ms(b.p95)} / {_ms(b.p99)} / {_ms(b.max)} "
            f"| {_ms(c.p50)} / {_ms(c.p99)} | {p.lag_max:,} / {p.lag_end} "
            f"| {'never' if p.drained_s is None else p.drained_s} "
            f"| {p.cpu['worker']:.2f} / {p.cpu['broker']:.2f} / {p.cpu['generator']:.2f} "
            f"| {p.cpu['broker_first']:.2f} → {p.cpu['broker_last']:.2f} "
            f"| {p.rss_mb['worker']:,.0f} | {'yes' if p.kept_up else 'no'} |"
        )
    return rows


def saturation(points: list[Point], series: str) -> Point | None:
    kept = [p for p in points if p.series == series and p.kept_up]
    return max(kept, key=lambda p: p.carts) if kept else None


def plot(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for series in sorted({p.series for p in points}):
        mine = sorted((p for p in points if p.series == series), key=lambda p: p.carts)
        for q, style in (("p50", "--"), ("p99", "-")):
            xy = [(p.carts, getattr(p.hops[HOPS[1]], q)) for p in mine]
            xy = [(x, max(float(y), 1.0)) for x, y in xy if y is not None]  # log axis: ≥ 1 ms
            if xy:
                left.plot(*zip(*xy, strict=True), style, marker="o", label=f"{series} {q}")
        for p in mine:
            ts = [t for t, lag in p.lag_series if lag is not None]
            lags = [lag for _, lag in p.lag_series if lag is not None]
            right.plot(ts, lags, lw=1, label=f"{series}, {p.carts} carts")
    for _, limit in TARGET_MS.values():
        left.axhline(limit, color="grey", lw=0.8, ls=":")
    left.set(xscale="log", yscale="log", xlabel="carts", ylabel="last packet → basket change (ms)")
    right.set(xlabel="seconds from the first send", ylabel="consumer lag (records)")
    right.set_yscale("symlog")
    left.legend(fontsize=7)
    right.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(points: list[Point], command: str, doc: Path) -> str:
    plot_path = doc.parent / "benchmarks-pipeline.png"
    plot(points, plot_path)
    lines = [
        "## Pipeline under load (`cartstream bench pipeline`)",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}: 2 cores shared by the broker,",
        "the workers, Postgres and the load generator (their CPU shares are in the table; a",
        "point's workers share one consumer group, and their CPU is summed); carts replayed at",
        "real-time pace from pre-encoded simulator output "
        f"({'/'.join(sorted({str(p.templates) for p in points}))} template carts copied with their",
        "own ids and start times). *reasoning*: detections replayed from",
        "the committed detector on the same frames, worker roles reason, anomalies, reconcile,",
        "persist; *full*: frames, every role. *consumed/s*: records sent less the lag when the",
        "last was sent, per second of sending (what the workers kept up with). Latencies in ms.",
        "A point keeps up when the generator",
        f"kept pace (p99 lateness ≤ 100 ms), lag drained within {DRAIN_S:.0f} s of the last send,",
        "and p99 last packet→basket change is under the target (150 ms reasoning, 300 ms full).",
        "",
        *table(points),
        "",
    ]
    for series in sorted({p.series for p in points}):
        best = saturation(points, series)
        lines.append(
            f"- **{series}**: saturation "
            + (
                f"at {best.carts:,} carts ({best.load.send_rate:,.0f} events/s)"
                if best
                else "below the smallest point measured"
            )
        )
    lines += ["", f"![latency vs load]({plot_path.name})", ""]
    for p in (p for p in points if p.hot):
        lines += [
            f"### Where the worker's time goes: {p.series}, {p.carts:,} carts "
            "(py-spy, 100 Hz, the first worker)",
            "",
            "| suspect | share of the worker's samples with it on the stack |",
            "|---|---:|",
            *[f"| {name} | {100 * share:.1f} % |" for name, share in p.shares.items()],
            "",
            "| function (self time) | self | inclusive |",
            "|---|---:|---:|",
            *[
                f"| `{h.function}` | {100 * h.self_share:.1f} % | {100 * h.total_share:.1f} % |"
                for h in p.hot[:15]
            ],
            "",
        ]
    text = "\n".join(lines)
    write_section(doc, SECTION, text)
    (doc.parent / "benchmarks-pipeline.json").write_text(
        json.dumps([point_json(p) for p in points], indent=1, default=str)
    )
    return text
