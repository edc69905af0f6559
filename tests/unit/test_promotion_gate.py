"""The promotion gate (models/promotion_gate.py): its verdicts on given scores and on a shadow
deployment's report, and on real models: a deliberately worse candidate is refused, an equally
good one passes, and one the shadow deployment found slower is refused by `models promote`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cartstream.models.catalog import Catalog
from cartstream.models.promotion_gate import (
    GateBounds,
    SetScore,
    judge,
    judge_online,
    run_gate,
    with_online,
)
from cartstream.models.registry import content_version
from tests.model_variants import copy_bundled, variant


def scores(map50: float, count: float) -> dict[str, float]:
    return {"map50": map50, "count_accuracy": count}


def test_a_candidate_worse_on_any_set_or_too_slow_is_refused() -> None:
    bounds = GateBounds(max_map_drop=0.0, max_count_drop=0.01, max_slowdown=1.25)
    held_out = SetScore("held-out", 300, scores(0.96, 0.81), scores(0.97, 0.90))
    verified = SetScore("verified", 40, scores(0.90, 0.80), scores(0.89, 0.795))
    better = judge("a", "b", [held_out], 4.0, 4.9, bounds)
    assert better.passed and better.as_dict()["passed"]
    worse = judge("a", "b", [held_out, verified], 4.0, 4.0, bounds)
    assert not worse.passed
    (reason,) = worse.refusals  # mAP fell on the verified set; count accuracy within 0.01
    assert reason.startswith("map50 on verified")
    slow = judge("a", "b", [held_out], 4.0, 5.1, bounds)
    assert [r.split(" ms")[0] for r in slow.refusals] == ["5.10"]


def test_the_gate_refuses_a_worse_model_and_passes_an_equal_one(
    tmp_path: Path, catalog: Catalog
) -> None:
    champion = copy_bundled(tmp_path / "champion")
    bounds = GateBounds(max_slowdown=3.0)  # two cores shared with other tests: timing is loose
    worse = run_gate(champion, variant(tmp_path / "worse", 0.5), catalog, 48, bounds=bounds)
    assert not worse.passed
    assert any(r.startswith("map50 on held-out") for r in worse.refusals), worse.refusals
    (held_out,) = worse.sets
    assert held_out.candidate["map50"] < held_out.champion["map50"]
    equal = run_gate(champion, variant(tmp_path / "equal", 0.0), catalog, 48, bounds=bounds)
    assert equal.passed, equal.refusals
    assert equal.sets[0].candidate == equal.sets[0].champion


def shadow(champion: str, candidate: str, **figures: Any) -> dict[str, Any]:
    """A report as `models shadow-report --json` prints it."""
    return {
        "frames": 500,
        "models": [{"champion": champion, "candidate": candidate, "frames": 500}],
        "agreement": 0.97,
        "confusions": [],
        "verified_frames": 40,
        "champion_accuracy_on_verified": 0.9,
        "candidate_accuracy_on_verified": 0.925,
        "champion_ms_p50_p99": [2.0, 5.0],
        "candidate_ms_p50_p99": [2.4, 6.0],
        **figures,
    }


def test_a_shadow_report_of_other_models_worse_on_verified_frames_or_slower_is_refused() -> None:
    bounds = GateBounds(max_slowdown=1.25)
    assert judge_online(shadow("a", "b"), "a", "b", bounds) == []
    (other,) = judge_online(shadow("a", "c"), "a", "b", bounds)
    assert other == "the shadow report compares a with c, not a with b"
    mixed = shadow("a", "b")
    mixed["models"].append({"champion": "z", "candidate": "b", "frames": 3})
    assert judge_online(mixed, "a", "b", bounds)[0].startswith("the shadow report compares a")
    (worse,) = judge_online(
        shadow("a", "b", candidate_accuracy_on_verified=0.875), "a", "b", bounds
    )
    assert worse.startswith("accuracy on 40 verified frames of the shadow deployment: 0.8750")
    (slow,) = judge_online(shadow("a", "b", candidate_ms_p50_p99=[2.6, 6.0]), "a", "b", bounds)
    assert slow.startswith("2.60 ms per frame on the workers")
    # nothing verified: accuracy is not judged, latency still is
    blind = shadow("a", "b", verified_frames=0, candidate_accuracy_on_verified=None)
    assert judge_online(blind, "a", "b", bounds) == []
    offline = judge("a", "b", [], 4.0, 4.0, bounds)
    judged = with_online(offline, shadow("a", "b", candidate_ms_p50_p99=[2.6, 6.0]), bounds)
    assert not judged.passed and judged.online is not None
    assert judged.as_dict()["online"]["agreement"] == 0.97


def test_promote_refuses_a_candidate_its_shadow_deployment_found_slower(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cartstream.services.cli.main import cli

    where = ["--registry", str(tmp_path / "registry")]
    champion = copy_bundled(tmp_path / "champion")
    candidate = variant(tmp_path / "equal", 0.0)  # as good offline
    a, b = content_version(champion), content_version(candidate)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["models", *args, *where], obj={})

    assert run("register", str(champion)).exit_code == 0
    assert run("promote", a).exit_code == 0
    assert run("register", str(candidate)).exit_code == 0
    report = tmp_path / "shadow.json"
    report.write_text(json.dumps(shadow(a, b, candidate_ms_p50_p99=[9.0, 12.0])))
    gate = ["--gate-images", "32", "--max-slowdown", "3.0"]  # offline timing on shared cores
    refused = run("promote", b, *gate, "--shadow-report", str(report))
    assert refused.exit_code != 0
    assert "9.00 ms per frame on the workers" in refused.output, refused.output
    report.write_text(json.dumps(shadow(a, b)))
    promoted = run("promote", b, *gate, "--shadow-report", str(report))
    assert promoted.exit_code == 0, promoted.output
    assert "shadow deployment: 500 frames, agreement 0.97" in promoted.output
