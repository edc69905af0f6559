"""The promotion gate: a candidate detector replaces the champion only if it is no worse on the
same evaluation sets and not slower beyond a bound.

The sets: held-out rendered scenes (a seed range training never uses) and, when given, the
human-verified frames of exported review queues (`cartstream review export`), the closest thing
to store data there is. Both models see exactly the same images; inference is deterministic, so
a difference in mAP@0.5 or count accuracy is the models', not noise. Latency is the median of
interleaved timed runs of the same batch on both models (the machine's load moves both alike).

When the candidate ran as a shadow beside the champion (`detect.shadow_version`), the online
comparison of the frames both saw (`cartstream models shadow-report --json`) is judged too
(`with_online`): it must be of these two models, the candidate no less accurate on the frames
people verified, and its median time per frame on the workers within the same slowdown bound.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cartstream.models.catalog import Catalog
from cartstream.models.dataset import load_labelled
from cartstream.models.evaluate import HELD_OUT_OFFSET, EvalReport, evaluate_frames
from cartstream.models.inference import DetectorRuntime
from cartstream.models.train import render_dataset


@dataclass(frozen=True)
class GateBounds:
    max_map_drop: float = 0.0  # candidate mAP@0.5 may be at most this much below the champion's
    max_count_drop: float = 0.0  # likewise exact-count accuracy
    max_slowdown: float = 1.25  # candidate ms per frame at most this many times the champion's
    max_online_accuracy_drop: float = 0.0  # on the verified frames of a shadow deployment


@dataclass(frozen=True)
class SetScore:
    name: str
    images: int
    champion: dict[str, float]
    candidate: dict[str, float]


@dataclass(frozen=True)
class GateResult:
    champion: str
    candidate: str
    sets: list[SetScore]
    champion_ms: float
    candidate_ms: float
    refusals: list[str] = field(default_factory=list)
    online: dict[str, Any] | None = None  # the shadow deployment's report, when judged

    @property
    def passed(self) -> bool:
        return not self.refusals

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def judge(
    champion: str,
    candidate: str,
    sets: Sequence[SetScore],
    champion_ms: float,
    candidate_ms: float,
    bounds: GateBounds,
) -> GateResult:
    """The verdict from scores already measured (pure: what the tests pin down)."""
    refusals = []
    for s in sets:
        for metric, allowed in (
            ("map50", bounds.max_map_drop),
            ("count_accuracy", bounds.max_count_drop),
        ):
            drop = s.champion[metric] - s.candidate[metric]
            if drop > allowed + 1e-12:
                refusals.append(
                    f"{metric} on {s.name} ({s.images} images): {s.candidate[metric]:.4f} "
                    f"against the champion's {s.champion[metric]:.4f}"
                )
    if candidate_ms > champion_ms * bounds.max_slowdown:
        refusals.append(
            f"{candidate_ms:.2f} ms per frame against the champion's {champion_ms:.2f} "
            f"(bound: {bounds.max_slowdown:.2f}x)"
        )
    return GateResult(champion, candidate, list(sets), champion_ms, candidate_ms, refusals)


def judge_online(
    online: Mapping[str, Any], champion: str, candidate: str, bounds: GateBounds
) -> list[str]:
    """Refusals from a shadow deployment's report (the dict `models shadow-report --json`
    prints): pure, like `judge`."""
    pairs = {(p["champion"], p["candidate"]) for p in online.get("models", [])}
    if pairs != {(champion, candidate)}:
        seen = ", ".join(f"{a} with {b}" for a, b in sorted(pairs)) or "no frames"
        return [f"the shadow report compares {seen}, not {champion} with {candidate}"]
    refusals = []
    verified = int(online.get("verified_frames") or 0)
    ours = online.get("champion_accuracy_on_verified")
    theirs = online.get("candidate_accuracy_on_verified")
    if (
        verified
        and ours is not None
        and theirs is not None
        and (ours - theirs > bounds.max_online_accuracy_drop + 1e-12)
    ):
        refusals.append(
            f"accuracy on {verified} verified frames of the shadow deployment: "
            f"{theirs:.4f} against the champion's {ours:.4f}"
        )
    champion_ms = (online.get("champion_ms_p50_p99") or [None])[0]
    candidate_ms = (online.get("candidate_ms_p50_p99") or [None])[0]
    if champion_ms and candidate_ms and candidate_ms > champion_ms * bounds.max_slowdown:
        refusals.append(
            f"{candidate_ms:.2f} ms per frame on the workers (median of the shadow deployment) "
            f"against the champion's {champion_ms:.2f} (bound: {bounds.max_slowdown:.2f}x)"
        )
    return refusals


def with_online(result: GateResult, online: Mapping[str, Any], bounds: GateBounds) -> GateResult:
    """The offline verdict with the shadow deployment's report judged as well."""
    refusals = judge_online(online, result.champion, result.candidate, bounds)
    return replace(result, refusals=[*result.refusals, *refusals], online=dict(online))


def _scores(report: EvalReport) -> dict[str, float]:
    return {"map50": round(report.map50, 4), "count_accuracy": round(report.count_accuracy, 4)}


def _median_ms_per_frame(
    runtimes: Sequence[DetectorRuntime], frames: np.ndarray, rounds: int = 7
) -> list[float]:
    batch = np.ascontiguousarray(frames[: min(len(frames), 8)])
    timings: list[list[float]] = [[] for _ in runtimes]
    for runtime in runtimes:
        runtime.run_raw(batch)  # warm-up
    for _ in range(rounds):
        for i, runtime in enumerate(runtimes):
            start = time.perf_counter()
            runtime.run_raw(batch)
            timings[i].append((time.perf_counter() - start) * 1000 / len(batch))
    return [statistics.median(t) for t in timings]


def run_gate(
    champion_path: Path,
    candidate_path: Path,
    catalog: Catalog,
    images: int = 300,
    seed: int = 0,
    verified: Sequence[Path] = (),
    bounds: GateBounds | None = None,
    threads: int | None = None,
) -> GateResult:
    """Evaluate both models on the same sets and judge the candidate."""
    champion = DetectorRuntime(champion_path, threads=threads).initialize()
    candidate = DetectorRuntime(candidate_path, threads=threads).initialize()
    try:
        sets = []
        frames, truth = render_dataset(catalog, images, HELD_OUT_OFFSET + seed)
        evaluation: list[tuple[str, np.ndarray, list[Any]]] = [
            (f"held-out scenes (seed {seed})", frames, truth)
        ]
        for folder in verified:
            more, labels = load_labelled(folder, catalog)
            if len(labels):
                evaluation.append((f"verified frames of {folder.name}", more, labels))
        for name, data, labels in evaluation:
            sets.append(
                SetScore(
                    name,
                    len(labels),
                    _scores(evaluate_frames(champion, catalog, data, labels)),
                    _scores(evaluate_frames(candidate, catalog, data, labels)),
                )
            )
        champion_ms, candidate_ms = _median_ms_per_frame([champion, candidate], frames)
        return judge(
            champion.version,
            candidate.version,
            sets,
            champion_ms,
            candidate_ms,
            bounds or GateBounds(),
        )
    finally:
        champion.close()
        candidate.close()
