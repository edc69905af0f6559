"""The typed result of a demo or eval run, and how it is printed.

`RunSummary.to_json()` is the `--summary-json` file (its keys are a contract with scripts and
the benches); the table is what `cartstream demo` prints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Percentiles:
    p50: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        if not values:
            return cls()
        arr = np.asarray(values, dtype=np.float64)
        return cls(round(float(np.percentile(arr, 50)), 1), round(float(np.percentile(arr, 99)), 1))


@dataclass(frozen=True)
class RunSummary:
    run_dir: str
    seed: int
    mode: str  # the reasoning evidence: fused | vision | weight
    speed: float
    sessions: int
    checkouts_requested: int
    checkouts_persisted: int
    accuracy: dict[str, Any]  # scoring.score_run over every requested checkout
    honest: dict[str, Any]  # the same figures over sessions with nothing injected
    anomaly_scores: dict[str, Any]  # scoring.score_anomalies
    status: dict[str, int]  # checkouts per status
    anomalies_by_kind: dict[str, int]  # rows in the database
    latency_ms: Percentiles  # last weight packet produced -> basket change published
    basket_changes: int
    frames_detected: int
    events: int
    events_by_topic: dict[str, int]
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)  # every change's, for pooling

    @property
    def complete(self) -> bool:
        """Every requested checkout was persisted."""
        return self.checkouts_persisted >= self.checkouts_requested

    @property
    def events_per_s(self) -> float | None:
        return round(self.events / self.seconds, 1) if self.seconds else None

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "checkout_accuracy": self.accuracy["cacc"],
            "events_per_s": self.events_per_s,
        }

    def print(self, console: Console) -> None:
        table = Table(title="cartstream demo", show_header=False)
        kinds = self.anomaly_scores.get("per_kind", {})
        injected = self.anomaly_scores.get("injected", 0)
        rows = [
            ("sessions", self.sessions),
            ("checkouts requested", self.checkouts_requested),
            ("checkouts persisted", self.checkouts_persisted),
            ("reasoning", self.mode),
            (
                "honest checkouts: accuracy (cAcc)",
                f"{self.honest['cacc']} over {self.honest['checkouts']} checkouts",
            ),
            ("honest checkouts: count error (ACD)", self.honest["acd"]),
            (
                "injected loss-prevention cases caught",
                f"{self.anomaly_scores.get('caught', 0)} of {injected}"
                + (f" ({len(kinds)} kinds)" if injected else ""),
            ),
            ("cAcc over all checkouts", self.accuracy["cacc"]),
            (
                "basket changes precision / recall",
                f"{self.accuracy['precision']} / {self.accuracy['recall']}",
            ),
            ("decisions", ", ".join(f"{k} {v}" for k, v in sorted(self.status.items())) or "-"),
            (
                "anomalies",
                ", ".join(f"{k} {v}" for k, v in sorted(self.anomalies_by_kind.items())) or "none",
            ),
            ("latency p50 / p99 (ms)", f"{self.latency_ms.p50} / {self.latency_ms.p99}"),
            ("frames detected", self.frames_detected),
            ("events", self.events),
            ("events/s", self.events_per_s),
            ("wall time (s)", self.seconds),
        ]
        for name, value in rows:
            table.add_row(name, str(value))
        console.print(table)
