"""What a chaos run writes: `summary.json` in its folder, and with `--report` a markdown page
(docs/reliability.md) with the verdict, the schedule, every difference explained, and a timeline
plot: faults as bands, checkouts persisted, consumer lag and the broker's CPU as lines.
Hand-written sections below the generated part stay when a run rewrites the page."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from pathlib import Path
from statistics import mean
from typing import Any

from cartstream.services.tools.chaos.run import ChaosResult, RunRecord
from cartstream.services.tools.chaos.verify import Sample, against_targets, summarize

BAND_COLOURS = {
    "kill": "#d62728",
    "pause": "#9467bd",
    "db_outage": "#ff7f0e",
    "broker_cut": "#1f77b4",
    "broker_restart": "#17becf",
}


def write_report(result: ChaosResult, folder: Path, markdown: Path | None) -> Path:
    summary = folder / "summary.json"
    summary.write_text(json.dumps(_summary(result), indent=2) + "\n")
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        plot = markdown.with_name(markdown.stem + "-timeline.png")
        _plot(result, plot)
        page = markdown.read_text() if markdown.exists() else ""
        report = _markdown(result, plot.name)
        status = status_note(page)
        if status:  # under the title, above the new report
            title, _, rest = report.partition("\n\n")
            report = f"{title}\n\n{status}\n{rest}"
        kept = hand_written(page)
        markdown.write_text(report + (f"\n{kept}" if kept else ""))
    return summary


HAND_WRITTEN = re.compile(r"^## .*\(hand-written", re.MULTILINE)
STATUS = re.compile(r"^> \*\*Status.*?(?=^(?!>))", re.MULTILINE | re.DOTALL)


def status_note(page: str) -> str:
    """The hand-written status quote under a report's title (`> **Status ...`, to its last `>`
    line), which a new run keeps: the people who ran it say what the run shows and misses."""
    found = STATUS.search(page)
    return found.group(0) if found else ""


def hand_written(page: str) -> str:
    """The sections people wrote below a generated report (their headings say "hand-written"):
    a new run rewrites the report above them and keeps them."""
    found = HAND_WRITTEN.search(page)
    return page[found.start() :] if found else ""


def _summary(result: ChaosResult) -> dict[str, Any]:
    c = result.config
    return {
        "config": {
            "seed": c.seed,
            "carts": c.carts,
            "sessions_per_cart": c.sessions,
            "speed": c.speed,
            "topology": c.topology,
            "workers": c.workers,
            "fuzz_records": c.fuzz_records,
        },
        "faults": [asdict(f) for f in result.faults],
        "verdict": result.verdict.to_json(),
        "runs": {r.label: _run(r) for r in (result.reference, result.chaos)},
    }


def _run(run: RunRecord) -> dict[str, Any]:
    return {
        "seconds": round(run.seconds, 1),
        "requested": len(run.requested),
        "persisted": len(run.outcome.checkouts),
        "events": run.events,
        "samples": [asdict(s) for s in run.samples],
        "fuzz": run.fuzz,
    }


def _plot(result: ChaosResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    run = result.chaos
    t = [s.t_s for s in run.samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for ax in (top, bottom):
        for fault in result.faults:
            ax.axvspan(fault.at_s, fault.end_s, color=BAND_COLOURS[fault.kind], alpha=0.18, lw=0)
    persisted = [s.persisted for s in run.samples]
    rate = [0.0] + [
        max(0.0, (b - a) / max(1e-6, tb - ta))
        for a, b, ta, tb in zip(persisted, persisted[1:], t, t[1:], strict=False)
    ]
    top.plot(t, persisted, color="black", lw=1.4, label="checkouts persisted")
    top.set_ylabel("checkouts")
    twin = top.twinx()
    twin.plot(t, rate, color="grey", lw=0.8, alpha=0.7, label="checkouts/s")
    twin.set_ylabel("checkouts/s")
    top.legend(loc="upper left", fontsize=8)
    lag = [s.lag if s.lag is not None else float("nan") for s in run.samples]
    bottom.plot(t, lag, color="#2ca02c", lw=1.2, label="consumer lag (records)")
    bottom.set_ylabel("lag")
    cpu = [s.broker_cpu if s.broker_cpu is not None else float("nan") for s in run.samples]
    if any(c == c for c in cpu):  # NaN != NaN; none known: a run from before it was sampled
        right = bottom.twinx()
        right.plot(t, cpu, color="#8c564b", lw=0.8, alpha=0.8, label="broker CPU (cores)")
        right.set_ylabel("broker CPU (cores)")
        right.legend(loc="upper left", fontsize=7)
    bottom.set_xlabel("seconds since the carts started")
    handles = [Patch(color=c, alpha=0.3) for c in BAND_COLOURS.values()]
    bottom.legend(handles, list(BAND_COLOURS), loc="upper right", fontsize=7, ncol=5)
    top.set_title(f"chaos run, seed {result.config.seed}: faults as bands")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _broker_cpu_lines(samples: list[Sample]) -> list[str]:
    """The broker's CPU, mean per minute of samples: the first minute and the busiest (its cost
    grows with the log it holds, docs/broker-cost.md); nothing for a run sampled without it."""
    known = [s for s in samples if s.broker_cpu is not None]
    if not known:
        return []
    minutes: dict[int, list[float]] = {}
    for s in known:
        minutes.setdefault(int((s.t_s - known[0].t_s) // 60), []).append(s.broker_cpu or 0.0)
    busiest = max(minutes, key=lambda m: mean(minutes[m]))
    start = known[0].t_s + 60 * busiest
    return [
        f"Broker CPU, mean over a minute: {mean(minutes[0]):.2f} cores in the chaos run's first,"
        f" {mean(minutes[busiest]):.2f} in its busiest (from t = {start:.0f} s); the brown line,"
        " and docs/broker-cost.md says why it grows.",
        "",
    ]


def _markdown(result: ChaosResult, plot_name: str) -> str:
    c, v = result.config, result.verdict
    s = c.shape
    command = (
        f"cartstream chaos --seed {c.seed} --carts {c.carts} --sessions {c.sessions} "
        f"--speed {c.speed:g} --topology {c.topology} --workers {c.workers} --kills {s.kills} "
        f"--pauses {s.pauses} --db-outages {s.db_outages} --db-outage-s {s.db_outage_s:g} "
        f"--broker-cuts {s.broker_cuts} "
        + (f"--broker-cut-s {s.broker_cut_s[0]:g} " if len(set(s.broker_cut_s)) == 1 else "")
        + f"--broker-restarts {s.broker_restarts} --fuzz {c.fuzz_records} "
        f"--deadline {c.deadline_s:g} --report docs/reliability.md"
    )
    lines = [
        "# Reliability: the pipeline under faults",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')} (2 cores: broker, Postgres,",
        "workers, carts and the fault injector share them).",
        "",
        f"**Verdict: {'passed' if v.passed else 'FAILED'}** (nothing lost, duplicated, left open",
        "or unlettered, no unexpected exit, lag back to 0 in the end).",
        "",
        "| measure | value |",
        "|---|---:|",
        *[f"| {name} | {value} |" for name, value in summarize(v)],
        "",
        "Against the targets for the documented run:",
        "",
        "| target | this run | met |",
        "|---|---:|:---:|",
        *[
            f"| {target} | {measured} | {'yes' if met else '**no**'} |"
            for target, measured, met in against_targets(v, c.carts * c.sessions, s, c.fuzz_records)
        ],
        "",
        f"![timeline]({plot_name})",
        "",
        *_broker_cpu_lines(result.chaos.samples),
        "## Faults",
        "",
        "| fault | lag back to 0 after it (s) |",
        "|---|---:|",
        *[f"| {r['fault']} | {r['recovered_after_s']} |" for r in v.lag_recovery_s],
        "",
        "## Runs",
        "",
        "| run | checkouts requested | persisted | seconds |",
        "|---|---:|---:|---:|",
        *[
            f"| {r.label} | {len(r.requested)} | {len(r.outcome.checkouts)} | {r.seconds:.0f} |"
            for r in (result.reference, result.chaos)
        ],
        "",
        *_fuzz_rows(result.chaos.fuzz),
        "## What happened, in order",
        "",
        *[f"- t={t:.1f} s: {what}" for t, what in result.chaos.events],
        "",
        "## How to read it",
        "",
        "- Both runs stretch the deadlines meant for data that never comes (a step's frames, a",
        "  checkout's last packets, the anomaly review) to 900 s: nothing is lost here by design,",
        "  so a deadline firing would only measure how long a fault stalled the pipeline.",
        "- Lag is end offsets minus the groups' committed offsets, sampled once a second from",
        "  outside. The embedded broker's ListOffsets answers low (it counts a batch's first",
        "  record), so the lag line is a lower bound (`services/kafka/lag.py` says why the",
        "  exact reading is not used yet); what counts is verified from the outputs (rows,",
        "  topic, changelogs).",
        "",
        "## Differences from the reference",
        "",
    ]
    if not v.differences and not v.lost:
        lines.append("None: every checkout equals the fault-free run's.")
    for d in v.differences:
        lines.append(
            f"- session `{d['session_id']}`: reference {d['reference']}, chaos {d['chaos']}"
        )
    for sid in v.lost:
        lines.append(f"- session `{sid}`: **no checkout row**")
    return "\n".join(lines) + "\n"


def _fuzz_rows(fuzz: dict[str, Any]) -> list[str]:
    if not fuzz:
        return []
    sent, refused = fuzz.get("sent", {}), fuzz.get("refused_by_broker", {})
    missing = fuzz.get("without_dead_letter", {})
    rows = [
        "## Hostile input",
        "",
        f"{sum(sent.values())} records delivered by a librdkafka producer, including a flood of "
        f"{fuzz.get('flood_frames', 0)} frames from one cart in {fuzz.get('flood_seconds', 0)} s.",
        "",
        "| kind | delivered | refused by the broker | without a dead letter |",
        "|---|---:|---:|---:|",
    ]
    if "flood_detected" in fuzz:  # the camera's burst: admitted by the frame rate limit
        missing = {**missing, "flood": f"{fuzz['flood_detected']} (detected: within the burst)"}
    for kind in sorted(set(sent) | set(refused)):
        rows.append(
            f"| {kind} | {sent.get(kind, 0)} | {refused.get(kind, 0)} | "
            f"{missing.get(kind, '(harmless)')} |"
        )
    return [*rows, ""]
