"""Drift monitoring, offline and reproducible: the reference a detector's live frames are
compared with, and the scenarios that prove the monitor (models/drift.py).

Frames come from the cart simulator (a fixed cart clock, so a seed gives the same run) and go
through the real detect stage; its Detection records are what the monitor reads, as on a worker.
Scenarios: honest shopping (no alert may fire: its share of checks with an alert is the false
alarm rate), a lighting change in one store, and a SKU whose packaging changes; for each, the
simulated minutes from the change to the first alert.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.drift import DriftMonitor, DriftReference, Observation
from cartstream.services.carts.simulate import SceneChange, SimConfig, cart_events, plan_carts
from cartstream.streams.detect import DetectStage
from cartstream.streams.stage import Inbound

CART_CLOCK_END_MS = 1_700_000_000_000  # simulated runs end here (reproducible, in the past)
CHECK_EVERY = 10  # observations between two looks at the monitor


def detections(
    config: SimConfig,
    settings: Settings,
    catalog: Catalog,
    changes: Sequence[SceneChange] = (),
    batch: int = 64,
) -> Iterator[dict[str, Any]]:
    """The detect stage's Detection records for a simulated run, in cart-time order."""
    planned = plan_carts(config, catalog, now_ms=CART_CLOCK_END_MS)
    topics = settings.topics
    frames = (
        record
        for _, topic, _, _, record in cart_events(planned, catalog, topics, config.rate_hz, changes)
        if topic == topics.frames
    )
    stage = DetectStage(settings, catalog)
    stage.start()
    try:
        while chunk := list(itertools.islice(frames, batch)):
            now = now_ms()
            inbounds = [Inbound(topics.frames, 0, n, b"", now) for n in range(len(chunk))]
            for out in stage.handle_batch(chunk, inbounds, [b""] * len(chunk), now):
                if out.topic == topics.detections:
                    yield dict(out.record)
    finally:
        stage.close()


def run_start_ms(config: SimConfig, catalog: Catalog) -> int:
    return min(p.start_ms for p in plan_carts(config, catalog, now_ms=CART_CLOCK_END_MS))


def build_reference(config: SimConfig, settings: Settings, catalog: Catalog) -> DriftReference:
    zone = settings.reason.hand_zone_y
    observations = (
        Observation.of_detection(d, zone) for d in detections(config, settings, catalog)
    )
    source = (
        f"honest simulated shopping: {config.carts} carts x {config.sessions} sessions, "
        f"seed {config.seed}"
    )
    return DriftReference.from_observations(observations, source)


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    frames: int
    minutes: float  # simulated minutes the run covers
    change_at_min: float | None  # when the scene changed, from the run's start
    first_alert_min: float | None  # minutes from the change (or the start) to the first alert
    alerting: tuple[str, ...]  # what alerted first: scope/feature (PSI)
    checks_before: int  # looks at the monitor before any change
    alarms_before: int  # ... of which with an alert: false alarms


def run_scenario(
    name: str,
    config: SimConfig,
    settings: Settings,
    catalog: Catalog,
    reference: DriftReference,
    changes: Sequence[SceneChange] = (),
) -> ScenarioResult:
    d = settings.detect
    monitor = DriftMonitor(reference, d.drift_window, d.drift_min_samples, d.drift_alert_psi)
    start = run_start_ms(config, catalog)
    change_ms = min((c.from_ms for c in changes), default=None)
    frames = checks = alarms = 0
    first: float | None = None
    alerting: tuple[str, ...] = ()
    last = start
    for det in detections(config, settings, catalog, changes):
        monitor.observe(Observation.of_detection(det, settings.reason.hand_zone_y))
        frames += 1
        last = int(det["capture_time_ms"])
        if frames % CHECK_EVERY:
            continue
        drifting = [r for r in monitor.readings() if r.drifting]
        if change_ms is None or last < change_ms:
            checks += 1
            alarms += bool(drifting)
        if drifting and first is None and (change_ms is None or last >= change_ms):
            first = (last - (change_ms if change_ms is not None else start)) / 60_000
            alerting = tuple(f"{'/'.join(r.scope)} {r.feature} ({r.psi:.2f})" for r in drifting[:4])
    return ScenarioResult(
        name,
        frames,
        (last - start) / 60_000,
        (change_ms - start) / 60_000 if change_ms is not None else None,
        first,
        alerting,
        checks,
        alarms,
    )


def table(results: Sequence[ScenarioResult]) -> str:
    def minutes(value: float | None, missing: str) -> str:
        return f"{value:.1f}" if value is not None else missing

    return str(
        tabulate(
            [
                [
                    r.name,
                    r.frames,
                    f"{r.minutes:.1f}",
                    minutes(r.change_at_min, "-"),
                    minutes(r.first_alert_min, "none"),
                    f"{r.alarms_before}/{r.checks_before}",
                    "; ".join(r.alerting) or "-",
                ]
                for r in results
            ],
            headers=[
                "scenario",
                "frames",
                "simulated min",
                "change at min",
                "first alert (min after change)",
                "false alarms before the change",
                "what alerted first",
            ],
            tablefmt="github",
            disable_numparse=True,
        )
    )


def write_report(out: Path, results: Sequence[ScenarioResult], settings: Settings) -> None:
    d = settings.detect
    out.write_text(
        f"""# Drift monitoring (`cartstream eval drift`)

Live detections are compared with the detector's reference (honest simulated shopping, built by
`cartstream models drift-reference`) by PSI over sliding windows of the last {d.drift_window}
observations per store camera (brightness, contrast, best-box confidence, boxes in hand) and per
SKU (its boxes' scores); a window of at least {d.drift_min_samples} with PSI >= {d.drift_alert_psi}
alerts (`cartstream_drift_psi` in Prometheus; the chart's `CartstreamDetectorDrift` rule).
Scenarios run the cart simulator on a fixed clock through the real detect stage; the monitor is
read every {CHECK_EVERY} frames. A false alarm is a look with any scope alerting before the
scene changed (all of an honest run).

{table(results)}
"""
    )
