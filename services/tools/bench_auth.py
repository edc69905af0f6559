"""`cartstream bench auth`: what verifying cart signatures costs a worker.

The same simulated, signed cart traffic runs through the stages in memory (`MemoryPipeline`:
the worker's gate, decoding, validation and stage code, without the broker) with verification
`off` and `enforce`, alternating, several times each. Two workloads:
- `all stages`: frames (detector inference included), weights and session events;
- `reason only`: weights and session events through reason, the cheapest path per record,
  where verification weighs most (with 8 times the carts, so that a run lasts long enough).
Without the broker and Faust each event costs less than in a real worker, so the share that
verification takes here is an upper bound of its share there. The real share is measured too:
- `demo, worker`: whole `cartstream demo` runs at full speed (broker, one worker with every
  stage, carts signing in both cases), the worker verifying (`enforce`) or not (`off`).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cartstream.core.cart_auth import Keyring
from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.schemas.codec import SCHEMA_HEADER, AvroCodec
from cartstream.services.carts.simulate import SimConfig, cart_events, plan_carts
from cartstream.streams.anomalies import AnomalyStage
from cartstream.streams.detect import DetectStage
from cartstream.streams.reason import ReasonStage
from cartstream.streams.reconcile import ReconcileStage
from cartstream.streams.stage import Stage
from cartstream.streams.testing import MemoryPipeline

KEY = "bench-" + "k" * 40
REASON_SCALE = 8  # the reason-only workload's carts, per cart of the others
Event = tuple[str, bytes, bytes, dict[str, bytes]]  # topic, key, value, headers


@dataclass(frozen=True)
class Trial:
    workload: str
    mode: str
    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


def signed_traffic(settings: Settings, catalog: Catalog, carts: int, sessions: int) -> list[Event]:
    """The simulator's cart events, encoded and signed as the cart client sends them."""
    codec = AvroCodec()
    sign = Keyring({"k1": KEY.encode()}).fleet("k1")
    planned = plan_carts(SimConfig(carts, sessions, seed=5, run_id="bench"), catalog)
    events: list[Event] = []
    for _, topic, key, schema, record in cart_events(planned, catalog, settings.topics, 10.0):
        value = codec.encode(schema, record)
        headers = dict(codec.headers(schema))
        headers.update(sign(key).headers(topic, key.encode(), value, headers[SCHEMA_HEADER]))
        events.append((topic, key.encode(), value, headers))
    return events


def _stages(settings: Settings, catalog: Catalog, workload: str) -> list[Stage[Any]]:
    stages: list[Stage[Any]] = [
        ReasonStage(settings, catalog),
        AnomalyStage(settings, catalog),
        ReconcileStage(settings, catalog),
    ]
    if workload == "all stages":
        stages.insert(0, DetectStage(settings, catalog))
    return stages


def run_trial(
    settings: Settings, catalog: Catalog, events: list[Event], workload: str, mode: str
) -> Trial:
    configured = settings.with_overrides(
        cart_auth={"mode": mode, "master_keys": {"k1": KEY}, "max_age_s": 86_400.0}
    )
    pipeline = MemoryPipeline(configured, _stages(configured, catalog, workload))
    frames = configured.topics.frames
    chosen = [e for e in events if workload == "all stages" or e[0] != frames]
    started = time.perf_counter()
    for topic, key, value, headers in chosen:
        pipeline.publish_raw(topic, key, value, headers)
        pipeline.run()
    seconds = time.perf_counter() - started
    pipeline.close()
    refused = len(pipeline.log[configured.topics.dead_letters])
    if refused:
        raise AssertionError(f"{refused} honest records refused in {mode} mode")
    return Trial(workload, mode, len(chosen), seconds)


def demo_trial(mode: str, carts: int, sessions: int, work: Path) -> Trial:
    """A whole demo at full speed; its carts sign either way, its worker verifies or not."""
    from cartstream.services.tools.bench_tracing import run_trial as demo_run

    env = {
        "CARTSTREAM_CART_AUTH__MODE": mode,
        "CARTSTREAM_CART_AUTH__MASTER_KEYS": json.dumps({"k1": KEY}),
    }
    trial = demo_run(mode, 0.0, carts, sessions, seed=5, run_dir=work, settings_env=env)
    return Trial("demo, worker", mode, trial.events, trial.events / trial.events_per_s)


def run(carts: int, sessions: int, repeats: int, demo_work: Path | None = None) -> list[Trial]:
    """`demo_work`: a scratch folder for the end-to-end runs (None: in-memory workloads only)."""
    settings, catalog = Settings(), Catalog.load()
    traffic = {
        # reason alone is fast: more carts, so that a run lasts long enough to time
        "reason only": signed_traffic(settings, catalog, carts * REASON_SCALE, sessions),
        "all stages": signed_traffic(settings, catalog, carts, sessions),
    }
    trials = []
    for i in range(repeats):
        order = ("off", "enforce") if i % 2 == 0 else ("enforce", "off")
        for workload, events in traffic.items():
            trials += [run_trial(settings, catalog, events, workload, m) for m in order]
        if demo_work is not None:
            trials += [demo_trial(m, carts, sessions, demo_work / f"{m}-{i}") for m in order]
        print(f"  repeat {i + 1} of {repeats} done", flush=True)
    return trials


def table(trials: list[Trial]) -> str:
    lines = [
        "| workload | verification | runs | events a run | events/s (median) | cost |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for workload in dict.fromkeys(t.workload for t in trials):
        rates = {
            mode: statistics.median(
                t.events_per_s for t in trials if t.workload == workload and t.mode == mode
            )
            for mode in ("off", "enforce")
        }
        for mode, rate in rates.items():
            runs = [t for t in trials if t.workload == workload and t.mode == mode]
            cost = "" if mode == "off" else f"{100 * (1 - rate / rates['off']):.1f} %"
            lines.append(
                f"| {workload} | {mode} | {len(runs)} | {runs[0].events} | {rate:.0f} | {cost} |"
            )
    return "\n".join(lines)


def write_report(out: Path, trials: list[Trial], carts: int, sessions: int, repeats: int) -> None:
    every = "\n".join(
        f"| {t.workload} | {t.mode} | {t.events} | {t.seconds:.2f} | {t.events_per_s:.0f} |"
        for t in trials
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"""# Cart signature verification cost (`cartstream bench auth`)

Command: `cartstream bench auth --carts {carts} --sessions {sessions} --repeats {repeats}`.
{__doc__.split(chr(10), 2)[2].strip()}

{table(trials)}

Cost = the share of events/s lost with verification enforced (target: under 5 %).

Every run, in order:

| workload | verification | events | seconds | events/s |
|---|---|---:|---:|---:|
{every}
"""
    )
