"""`cartstream bench tracing`: what tracing costs, end to end, with everything on one machine.

Each trial is a whole `cartstream demo` (broker, worker with every role, simulated carts) in its
own process, so the tracer provider starts fresh. Trials alternate between tracing off (sample
ratio 0: headers still flow, nothing is recorded) and on (every span recorded and written to the
span file), and each configuration's median over the repeats is compared:
- throughput: carts publish as fast as they can (`--speed 0`); events per second counts every
  cart event from the first publish to the last checkout persisted;
- latency: carts publish at 5x real time (`--speed 5`, well below saturation, so latency is
  the pipeline's and not a queue's); p50/p99 from a cart's weight packet to the basket change it
  completed, pooled over the runs.
The order of off and on flips every repeat, so neither always runs second.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cartstream.exceptions import CartstreamError

CONFIGS: dict[str, dict[str, str]] = {
    "off": {"CARTSTREAM_OTEL_EXPORTER": "jsonl", "CARTSTREAM_OTEL_SAMPLE_RATIO": "0"},
    "on": {"CARTSTREAM_OTEL_EXPORTER": "jsonl", "CARTSTREAM_OTEL_SAMPLE_RATIO": "1"},
}


PACED_SPEED = 5.0  # about a quarter of what one 2-core machine carries at full speed


@dataclass(frozen=True)
class Trial:
    config: str
    speed: float
    events: int
    events_per_s: float
    p50_ms: float
    p99_ms: float
    spans: int
    latencies_ms: tuple[float, ...]


def run_trial(
    config: str,
    speed: float,
    carts: int,
    sessions: int,
    seed: int,
    run_dir: Path,
    settings_env: Mapping[str, str] | None = None,
) -> Trial:
    """One demo run; `settings_env` (default: the tracing setting `config` names) are the
    CARTSTREAM_* variables that make the difference between configurations."""
    summary = run_dir / "summary.json"
    varied = ("CARTSTREAM_OTEL_", "CARTSTREAM_CART_AUTH__")  # what the benches compare
    env = {k: v for k, v in os.environ.items() if not k.startswith(varied)}
    env.update(CONFIGS[config] if settings_env is None else settings_env)
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
        str(speed),
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
        speed,
        int(s["events"]),
        float(s["events_per_s"]),
        float(s["latency_ms"]["p50"]),
        float(s["latency_ms"]["p99"]),
        spans,
        tuple(s["latencies_ms"]),
    )


def run(
    carts: int, sessions: int, repeats: int, seed: int, work: Path, echo: bool = True
) -> list[Trial]:
    trials = []
    for n in range(repeats):
        order = list(CONFIGS) if n % 2 == 0 else list(CONFIGS)[::-1]
        for speed, config in ((v, c) for v in (0.0, PACED_SPEED) for c in order):
            started = time.monotonic()
            trial = run_trial(config, speed, carts, sessions, seed, work / f"{config}-{speed}-{n}")
            trials.append(trial)
            if echo:
                print(
                    f"  {config:<3} speed {speed:g} run {n + 1}: "
                    f"{trial.events_per_s:.0f} events/s, "
                    f"p99 {trial.p99_ms:.0f} ms, {trial.spans} spans "
                    f"({time.monotonic() - started:.0f} s)",
                    flush=True,
                )
    return trials


def table(trials: list[Trial]) -> str:
    lines = [
        "| tracing | runs | events a run | events/s at full speed (median) "
        "| p50 ms paced | p99 ms paced (pooled) | spans a run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    medians: dict[str, tuple[float, float]] = {}
    for config in CONFIGS:
        flat_out = [t for t in trials if t.config == config and t.speed == 0]
        paced = [t for t in trials if t.config == config and t.speed != 0]
        eps = statistics.median(t.events_per_s for t in flat_out)
        pooled = np.asarray([x for t in paced for x in t.latencies_ms])
        p50, p99 = (float(v) for v in np.percentile(pooled, [50, 99]))
        spans = statistics.median(t.spans for t in flat_out)
        medians[config] = (eps, p99)
        lines.append(
            f"| {config} | {len(flat_out)} + {len(paced)} | {flat_out[0].events} | {eps:.0f} "
            f"| {p50:.0f} | {p99:.0f} | {spans:.0f} |"
        )
    (off_eps, off_p99), (on_eps, on_p99) = medians["off"], medians["on"]
    lines += [
        "",
        f"Cost of tracing: {100 * (off_eps - on_eps) / off_eps:.1f} % fewer events/s, "
        f"{100 * (on_p99 - off_p99) / off_p99:+.1f} % p99 latency.",
    ]
    return "\n".join(lines)


def write_report(
    out: Path, trials: list[Trial], carts: int, sessions: int, repeats: int, seed: int
) -> None:
    every = "\n".join(
        f"| {t.config} | {t.speed:g} | {t.events_per_s:.0f} | {t.p50_ms:.0f} | {t.p99_ms:.0f} "
        f"| {t.spans} |"
        for t in trials
    )
    text = f"""# Tracing overhead (`cartstream bench tracing`)

Command: `cartstream bench tracing --carts {carts} --sessions {sessions} --repeats {repeats}
--seed {seed}`. Each run is a whole `cartstream demo` in its own process: the embedded broker,
one worker with every stage, and {carts * sessions} simulated sessions, on {os.cpu_count()} cores
shared by all of them. Tracing off = sample ratio 0 (trace context still flows in the headers, no
span is recorded); on = every span recorded and written to the span file by the batch
processor. Throughput runs publish as fast as the carts can (`--speed 0`) and count every cart
event from the first publish to the last checkout persisted. Latency runs publish at
{PACED_SPEED:g}x real time, well below saturation, and measure a weight packet leaving the cart
to the basket change it completed being published (at full speed that time is the backlog's);
their percentiles pool every paced run's changes of a setting. The order of off and on flips
every repeat.

{table(trials)}

Every run, in order:

| tracing | speed | events/s | p50 ms | p99 ms | spans |
|---|---:|---:|---:|---:|---:|
{every}
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
