"""`cartstream bench tracing`: what tracing costs, end to end, with everything on one machine.

Each trial is a whole `cartstream demo` (broker, worker with every role, carts publishing as fast
as they can) in its own process, so the tracer provider starts fresh. Trials alternate between
tracing off (sample ratio 0: headers still flow, nothing is recorded) and on (every span
recorded and written to the span file), and each configuration's median over the repeats is
compared. Measured per trial: events per second (every cart event, from the first publish to
the last checkout persisted) and the p50/p99 latency from a cart's weight packet to the basket
change it completed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cartstream.exceptions import CartstreamError

CONFIGS: dict[str, dict[str, str]] = {
    "off": {"CARTSTREAM_OTEL_EXPORTER": "jsonl", "CARTSTREAM_OTEL_SAMPLE_RATIO": "0"},
    "on": {"CARTSTREAM_OTEL_EXPORTER": "jsonl", "CARTSTREAM_OTEL_SAMPLE_RATIO": "1"},
}


@dataclass(frozen=True)
class Trial:
    config: str
    events: int
    events_per_s: float
    p50_ms: float
    p99_ms: float
    spans: int


def run_trial(config: str, carts: int, sessions: int, seed: int, run_dir: Path) -> Trial:
    summary = run_dir / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTSTREAM_OTEL_")}
    env.update(CONFIGS[config])
    command = [
        sys.executable,
        "-m",
        "cartstream",
        "demo",
        "--carts",
        str(carts),
        "--sessions",
        str(sessions),
        "--seed",
        str(seed),
        "--speed",
        "0",
        "--run-dir",
        str(run_dir),
        "--summary-json",
        str(summary),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not summary.exists():
        raise CartstreamError(f"demo run failed ({config}):\n{done.stdout[-2000:]}")
    s = json.loads(summary.read_text())
    spans_file = run_dir / "spans.jsonl"
    spans = sum(1 for _ in spans_file.open()) if spans_file.exists() else 0
    return Trial(
        config,
        int(s["events"]),
        float(s["events_per_s"]),
        float(s["latency_ms"]["p50"]),
        float(s["latency_ms"]["p99"]),
        spans,
    )


def run(
    carts: int, sessions: int, repeats: int, seed: int, work: Path, echo: bool = True
) -> list[Trial]:
    trials = []
    for n in range(repeats):
        for config in CONFIGS:
            started = time.monotonic()
            trial = run_trial(config, carts, sessions, seed, work / f"{config}-{n}")
            trials.append(trial)
            if echo:
                print(
                    f"  {config:<3} run {n + 1}: {trial.events_per_s:.0f} events/s, "
                    f"p99 {trial.p99_ms:.0f} ms, {trial.spans} spans "
                    f"({time.monotonic() - started:.0f} s)",
                    flush=True,
                )
    return trials


def table(trials: list[Trial]) -> str:
    lines = [
        "| tracing | runs | events | events/s (median) | p50 ms | p99 ms (median) "
        "| spans per run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    medians: dict[str, tuple[float, float]] = {}
    for config in CONFIGS:
        mine = [t for t in trials if t.config == config]
        eps = statistics.median(t.events_per_s for t in mine)
        p50 = statistics.median(t.p50_ms for t in mine)
        p99 = statistics.median(t.p99_ms for t in mine)
        spans = statistics.median(t.spans for t in mine)
        medians[config] = (eps, p99)
        lines.append(
            f"| {config} | {len(mine)} | {mine[0].events} | {eps:.0f} | {p50:.0f} | {p99:.0f} "
            f"| {spans:.0f} |"
        )
    (off_eps, off_p99), (on_eps, on_p99) = medians["off"], medians["on"]
    lines += [
        "",
        f"Cost of tracing: {100 * (off_eps - on_eps) / off_eps:+.1f} % events/s, "
        f"{100 * (on_p99 - off_p99) / off_p99:+.1f} % p99 (negative: within the noise).",
    ]
    return "\n".join(lines)


def write_report(
    out: Path, trials: list[Trial], carts: int, sessions: int, repeats: int, seed: int
) -> None:
    every = "\n".join(
        f"| {t.config} | {t.events_per_s:.0f} | {t.p50_ms:.0f} | {t.p99_ms:.0f} | {t.spans} |"
        for t in trials
    )
    text = f"""# Tracing overhead (`cartstream bench tracing`)

Command: `cartstream bench tracing --carts {carts} --sessions {sessions} --repeats {repeats}
--seed {seed}`. Each run is a whole `cartstream demo --speed 0` in its own process: the embedded
broker, one worker with every stage, and {carts * sessions} simulated sessions published as fast
as the carts can, on {os.cpu_count()} cores shared by all of them. Tracing off = sample ratio 0
(trace context still flows in the headers, no span is recorded); on = every span recorded and
written to the span file by the batch processor. Events/s counts every cart event from the
first publish to the last checkout persisted; latency is from a weight packet leaving the cart
to the basket change it completed being published.

{table(trials)}

Every run, in order:

| tracing | events/s | p50 ms | p99 ms | spans |
|---|---:|---:|---:|---:|
{every}
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
