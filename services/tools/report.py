"""`cartstream demo --report DIR`: a markdown report with plots, from the run's spans and score.

- `latency.png`: the CDF of processing time per stage (one line a stage, log scale), and of the
  cart-to-checkout time (the shopper's request to the row written);
- `throughput.png`: events a second per stage over the run;
- `anomalies.png`: injected vs flagged sessions per anomaly kind;
- `report.md`: the tables behind them (accuracy, anomalies, latency percentiles) and one
  checkout's trace as `cartstream trace` prints it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from cartstream.core.spanfile import SpanRecord, read_spans, span_files
from cartstream.services.observability.tracetree import SpanIndex, render_checkout
from cartstream.services.tools.summary import RunSummary

STAGE_ORDER = ("cart", "detect", "reason", "anomalies", "reconcile", "persist")


def _is_processing(span: SpanRecord) -> bool:
    """A stage's processing of one input (a batch, for detect)."""
    return span.kind == "CONSUMER" and span.name.startswith("process ")


def stage_durations(spans: list[SpanRecord]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for s in spans:
        if _is_processing(s):
            out[s.stage].append(s.duration_ms)
    return out


def checkout_latencies(index: SpanIndex) -> list[float]:
    """Per persisted checkout: from the cart's checkout request to the end of its row write."""
    out = []
    for members in index.traces.values():
        writes = [s for s in members if s.name == "INSERT checkouts"]
        if writes:
            root = min(members, key=lambda s: s.start_ns)
            out.append((max(w.end_ns for w in writes) - root.start_ns) / 1e6)
    return out


def throughput(spans: list[SpanRecord]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Seconds since the first span, and inputs a second per stage (cart: records sent)."""
    starts = [s.start_ns for s in spans]
    if not starts:
        return np.zeros(0), {}
    t0 = min(starts)
    seconds = int((max(starts) - t0) // 1_000_000_000) + 1
    per: dict[str, np.ndarray] = {}
    for s in spans:
        if _is_processing(s):
            count = int(s.attributes.get("messaging.batch.message_count", 1))
        elif s.stage == "cart" and s.kind == "PRODUCER":
            count = 1
        else:
            continue
        row = per.setdefault(s.stage, np.zeros(seconds))
        row[int((s.start_ns - t0) // 1_000_000_000)] += count
    return np.arange(seconds), per


def _ordered(stages: list[str]) -> list[str]:
    return sorted(stages, key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else 99, s))


def _percentile_rows(durations: dict[str, list[float]], e2e: list[float]) -> list[str]:
    rows = [
        "| stage | inputs | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    series = [(s, durations[s]) for s in _ordered(list(durations))]
    series.append(("cart → checkout row", e2e))
    for name, values in series:
        if not values:
            continue
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        rows.append(
            f"| {name} | {len(values)} | {p50:.1f} | {p90:.1f} | {p99:.1f} | {max(values):.1f} |"
        )
    return rows


# Long on purpose: three matplotlib figures, each a straight run of plotting calls.
def _plots(
    out: Path,
    spans: list[SpanRecord],
    durations: dict[str, list[float]],
    e2e: list[float],
    summary: RunSummary,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for stage in _ordered(list(durations)):
        values = np.sort(durations[stage])
        ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=stage)
    if e2e:
        values = np.sort(e2e)
        ax.step(
            values,
            np.arange(1, len(values) + 1) / len(values),
            where="post",
            label="cart → checkout row",
            color="black",
            linestyle="--",
        )
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (log scale)")
    ax.set_ylabel("fraction of inputs")
    ax.set_title("Processing time per stage (CDF)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    seconds, per = throughput(spans)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for stage in _ordered(list(per)):
        label = "cart (records sent)" if stage == "cart" else stage
        ax.plot(seconds, per[stage], label=label, linewidth=1.2)
    ax.set_xlabel("seconds since the first span")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylabel("inputs per second (log scale)")
    ax.set_title("Throughput per stage")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)

    kinds = summary.anomaly_scores.get("per_kind", {})
    names = sorted(kinds)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if names:
        x = np.arange(len(names))
        ax.bar(x - 0.2, [kinds[k]["support"] for k in names], 0.4, label="sessions injected")
        ax.bar(x + 0.2, [kinds[k]["raised"] for k in names], 0.4, label="sessions flagged")
        ax.set_xticks(x, [n.replace("_", "\n") for n in names], fontsize=7)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no anomalies in this run", ha="center", va="center")
    ax.set_title("Loss prevention: injected vs flagged, per kind")
    fig.tight_layout()
    fig.savefig(out / "anomalies.png", dpi=110)
    plt.close(fig)


def _accuracy_rows(summary: RunSummary) -> list[str]:
    acc = summary.accuracy
    rows = [
        "| measure | value |",
        "|---|---:|",
        f"| sessions | {summary.sessions} |",
        f"| checkouts requested / persisted | {summary.checkouts_requested} / "
        f"{summary.checkouts_persisted} |",
        f"| honest checkouts: accuracy (cAcc) | {summary.honest['cacc']} |",
        f"| injected cases caught | {summary.anomaly_scores.get('caught', 0)} of "
        f"{summary.anomaly_scores.get('injected', 0)} |",
        f"| cAcc over all checkouts | {acc['cacc']} |",
        f"| count error per checkout (ACD) | {acc['acd']} |",
        f"| basket-change precision / recall | {acc['precision']} / {acc['recall']} |",
        f"| decisions | {', '.join(f'{k} {v}' for k, v in sorted(summary.status.items()))} |",
        f"| events / events per second | {summary.events} / {summary.events_per_s} |",
    ]
    return rows


def _anomaly_rows(summary: RunSummary) -> list[str]:
    scores = summary.anomaly_scores
    rows = [
        "| kind | injected | flagged | precision | recall |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, k in sorted(scores.get("per_kind", {}).items()):
        rows.append(
            f"| {kind} | {k['support']} | {k['raised']} | {k['precision']} | {k['recall']} |"
        )
    rows.append("")
    rows.append(
        f"False alarms: {scores.get('false_alarms', 0)} on "
        f"{scores.get('honest_sessions', 0)} honest sessions."
    )
    return rows


# Long on purpose: the report's markdown, section by section, in the order it reads.
def write_report(out: Path, summary: RunSummary, spans_path: Path) -> Path:
    """Write `report.md` and its PNGs into `out`; returns the markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    spans = list(read_spans(span_files(spans_path)))
    index = SpanIndex.build(spans)
    lines = [
        f"# cartstream demo report — {summary.sessions} sessions, seed {summary.seed}",
        "",
        f"Reasoning: {summary.mode}. Run folder: `{summary.run_dir}`. "
        f"Wall time {summary.seconds} s.",
        "",
        "## Accuracy",
        "",
        *_accuracy_rows(summary),
        "",
        "## Anomalies",
        "",
        "![injected vs flagged](anomalies.png)",
        "",
        *_anomaly_rows(summary),
        "",
    ]
    if not spans:
        lines += [
            "## Latency and throughput",
            "",
            f"No spans in `{spans_path}`: with a collector configured (CARTSTREAM_OTEL_ENDPOINT) "
            "spans go there, and this report has no timings.",
        ]
    else:
        durations, e2e = stage_durations(spans), checkout_latencies(index)
        _plots(out, spans, durations, e2e, summary)
        lines += [
            "## Latency",
            "",
            "![processing time per stage](latency.png)",
            "",
            *_percentile_rows(durations, e2e),
            "",
            "Detect's rows are batches. The cart-to-checkout time includes the anomaly review "
            "the checkout waits for and the carts' simulated pace.",
            "",
            "## Throughput",
            "",
            "![inputs per second per stage](throughput.png)",
            "",
        ]
        sample = _sample_checkout(index)
        if sample:
            lines += [
                "## One checkout's trace",
                "",
                f"`cartstream trace {sample} --spans {spans_path}`:",
                "",
                "```",
                render_checkout(index, sample, max_linked=4),
                "```",
            ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _sample_checkout(index: SpanIndex) -> str | None:
    """A checkout whose trace is complete (its row was written), the one with most changes."""
    best: tuple[int, str] | None = None
    for members in index.traces.values():
        sends = [s for s in members if s.name == "send checkouts"]
        if sends and any(s.name == "INSERT checkouts" for s in members):
            checkout = str(sends[0].attributes.get("cartstream.checkout_id"))
            candidate = (len(sends[0].links), checkout)
            best = max(best, candidate) if best else candidate
    return best[1] if best else None
