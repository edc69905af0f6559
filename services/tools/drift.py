"""Drift monitoring, offline and reproducible: the reference a detector's live frames are
compared with, and the scenarios that prove the monitor (models/drift.py).

Frames come from the cart simulator (a fixed cart clock, so a seed gives the same run) and go
through the real detect stage; its Detection records are what the monitor reads, as on a worker.
Reason runs beside it in memory, so the basket changes (and the vision drift per SKU they feed,
models/vision_drift.py) are a worker's too. Scenarios: honest shopping (no alert may fire: its
share of checks with an alert is the false alarm rate), a lighting change in one store, and a
SKU whose packaging changes; for each, the simulated minutes from the change to the first alert.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from tabulate import tabulate

from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.drift import DriftMonitor, DriftReference, Observation
from cartstream.models.vision_drift import VisionDriftMonitor, VisionReference
from cartstream.schemas.records import DETECTION
from cartstream.services.carts.simulate import SceneChange, SimConfig, cart_events, plan_carts
from cartstream.streams.detect import DetectStage
from cartstream.streams.reason import ReasonStage
from cartstream.streams.stage import Inbound
from cartstream.streams.testing import MemoryPipeline

CART_CLOCK_END_MS = 1_700_000_000_000  # simulated runs end here (reproducible, in the past)
CHECK_EVERY = 10  # observations between two looks at the monitor


Seen = tuple[Literal["detection", "change"], dict[str, Any]]


def simulated_run(
    config: SimConfig,
    settings: Settings,
    catalog: Catalog,
    changes: Sequence[SceneChange] = (),
    batch: int = 64,
) -> Iterator[Seen]:
    """The detect stage's Detection records and the reason stage's basket changes of a
    simulated run, in the order a worker would make them.

    Frames are detected in batches; weights and session events go to reason as they come. Reason
    runs in memory on a frozen clock (the run's end), so a step waits for its frames however far
    behind the batch is, and is decided by the same evidence as in real time."""
    planned = plan_carts(config, catalog, now_ms=CART_CLOCK_END_MS)
    topics = settings.topics
    detect = DetectStage(settings, catalog)
    detect.start()
    reason = MemoryPipeline(
        settings, [ReasonStage(settings, catalog)], clock=lambda: CART_CLOCK_END_MS
    )
    frames: list[dict[str, Any]] = []
    decided = 0

    def flush() -> Iterator[Seen]:
        nonlocal decided
        now = now_ms()
        inbounds = [Inbound(topics.frames, 0, n, b"", now) for n in range(len(frames))]
        for out in detect.handle_batch(frames, inbounds, [b""] * len(frames), now):
            if out.topic == topics.detections:
                yield "detection", dict(out.record)
                reason.publish(topics.detections, out.key, DETECTION, out.record)
        frames.clear()
        reason.run()
        made = reason.log[topics.basket_changes]
        for msg in made[decided:]:
            yield "change", reason.codec.decode(msg.value)
        decided = len(made)

    try:
        for _, topic, key, schema, record in cart_events(
            planned, catalog, topics, config.rate_hz, changes
        ):
            if topic == topics.frames:
                frames.append(record)
                if len(frames) >= batch:
                    yield from flush()
            else:
                reason.publish(topic, key, schema, record)
        yield from flush()
    finally:
        detect.close()
        reason.close()


def run_start_ms(config: SimConfig, catalog: Catalog) -> int:
    return min(p.start_ms for p in plan_carts(config, catalog, now_ms=CART_CLOCK_END_MS))


def build_reference(config: SimConfig, settings: Settings, catalog: Catalog) -> DriftReference:
    """Frame features from the detections, vision-weight disagreement from the changes (the
    changes need vision: `reason.mode` must not be weight)."""
    zone = settings.reason.hand_zone_y
    observations: list[Observation] = []
    changes: list[dict[str, Any]] = []
    for kind, record in simulated_run(config, settings, catalog):
        if kind == "detection":
            observations.append(Observation.of_detection(record, zone))
        else:
            changes.append(record)
    source = (
        f"honest simulated shopping: {config.carts} carts x {config.sessions} sessions, "
        f"seed {config.seed}"
    )
    frames = DriftReference.from_observations(observations, source)
    return replace(frames, vision=VisionReference.from_changes(changes))


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
    # the longest stretch of simulated minutes over which false alarms held without a break
    # (from the first look with an alert to the first without): a chart alert's `for` longer
    # than this keeps it from paging (alerts.visionFor, alerts.driftFor)
    longest_alarm_min: float = 0.0
    # how long the first alert after the change held without a break; None while it still
    # held at the run's end (then `minutes` - `change_at_min` - `first_alert_min` is a floor)
    first_alert_held_min: float | None = None


@dataclass
class Stretches:
    """How long a condition held without a break, from looks at increasing times: a stretch
    runs from its first look with the condition on to the first look with it off (or the last
    look, while it is still on)."""

    since: int | None = None  # when the stretch now on began
    longest_ms: int = 0
    first_ms: int | None = None  # the first stretch's length, once it ended

    def look(self, at: int, on: bool) -> None:
        if on and self.since is None:
            self.since = at
        if self.since is None:
            return
        self.longest_ms = max(self.longest_ms, at - self.since)
        if not on:
            if self.first_ms is None:
                self.first_ms = at - self.since
            self.since = None


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
    r = settings.reason
    vision = VisionDriftMonitor(
        reference.vision or VisionReference({}),
        r.vision_drift_window,
        r.vision_drift_min_samples,
        r.vision_drift_alert,
    )
    start = run_start_ms(config, catalog)
    change_ms = min((c.from_ms for c in changes), default=None)
    frames = checks = alarms = 0
    first: float | None = None
    before, after = Stretches(), Stretches()  # alerts before the change, and from it on
    alerting: tuple[str, ...] = ()
    last = start
    for kind, record in simulated_run(config, settings, catalog, changes):
        if kind == "change":
            vision.observe(record)
            continue
        monitor.observe(Observation.of_detection(record, settings.reason.hand_zone_y))
        frames += 1
        last = int(record["capture_time_ms"])
        if frames % CHECK_EVERY:
            continue
        drifting = [
            *(
                f"{'/'.join(x.scope)} {x.feature} ({x.psi:.2f})"
                for x in monitor.readings()
                if x.drifting
            ),
            *(
                f"sku/{x.sku} vision unconfirmed {x.unconfirmed}/{x.samples} "
                f"(surprise {x.surprise:.1f})"
                for x in vision.readings()
                if x.drifting
            ),
        ]
        if change_ms is None or last < change_ms:
            checks += 1
            alarms += bool(drifting)
            before.look(last, bool(drifting))
        if change_ms is None or last >= change_ms:
            after.look(last, bool(drifting))
            if drifting and first is None:
                first = (last - (change_ms if change_ms is not None else start)) / 60_000
                alerting = tuple(drifting[:4])
    return ScenarioResult(
        name,
        frames,
        (last - start) / 60_000,
        (change_ms - start) / 60_000 if change_ms is not None else None,
        first,
        alerting,
        checks,
        alarms,
        before.longest_ms / 60_000,
        after.first_ms / 60_000 if after.first_ms is not None else None,
    )


def table(results: Sequence[ScenarioResult]) -> str:
    def minutes(value: float | None, missing: str) -> str:
        return f"{value:.1f}" if value is not None else missing

    def held(r: ScenarioResult) -> str:
        if r.first_alert_min is None:
            return "-"
        if r.first_alert_held_min is not None:
            return f"{r.first_alert_held_min:.1f}"
        since_change = r.minutes - (r.change_at_min or 0.0)
        return f"{since_change - r.first_alert_min:.1f}, to the end"

    return str(
        tabulate(
            [
                [
                    r.name,
                    r.frames,
                    f"{r.minutes:.1f}",
                    minutes(r.change_at_min, "-"),
                    minutes(r.first_alert_min, "none"),
                    held(r),
                    f"{r.alarms_before}/{r.checks_before}",
                    f"{r.longest_alarm_min:.1f}" if r.alarms_before else "-",
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
                "it held (min)",
                "false alarms before the change",
                "longest false alarm (min)",
                "what alerted first",
            ],
            tablefmt="github",
            disable_numparse=True,
        )
    )


def write_report(
    out: Path, results: Sequence[ScenarioResult], settings: Settings, command: str
) -> None:
    d, r = settings.detect, settings.reason
    out.write_text(
        f"""# Drift monitoring (`{command}`)

Two monitors, both against the detector's reference (honest simulated shopping, built by
`cartstream models drift-reference`):

- **Frames** (detect stage, `models/drift.py`): PSI over sliding windows of the last
  {d.drift_window} observations per store camera (brightness, contrast, best-box confidence,
  boxes in hand) and per SKU (its boxes' scores); a window of at least {d.drift_min_samples} with
  PSI >= {d.drift_alert_psi} alerts (`cartstream_drift_psi`; the chart's `CartstreamDetectorDrift`).
- **Vision per SKU** (reason stage, `models/vision_drift.py`): each basket change whose weight
  names a SKU, with usable frames, is a trial that vision confirms or not; -log10 P(that many
  unconfirmed) under the SKU's honest rate, over its most surprising run of recent trials (the
  last {r.vision_drift_min_samples} to {r.vision_drift_window}), >= {r.vision_drift_alert} alerts
  (`cartstream_drift_vision_surprise`; the chart's `CartstreamVisionDrift`). It catches what the
  frames cannot: a SKU the detector no longer sees at all.

Scenarios run the cart simulator on a fixed clock through the real detect and reason stages
(reason in memory); the monitors are read every {CHECK_EVERY} frames. A false alarm is a look
with any scope alerting before the scene changed (all of an honest run); "longest false alarm"
is the longest stretch of simulated minutes such looks followed one another without a break,
and "it held" how long the first alert after the change lasted. The worker logs an alert at
once; the chart's rules page only when it holds (`alerts.driftFor`, `alerts.visionFor`), so a
false alarm shorter than that pages no one, and a real one pages that much later.

{table(results)}
"""
    )
