"""The promotion gate (models/promotion_gate.py): its verdicts on given scores, and on real
models: a deliberately worse candidate is refused, an equally good one passes."""

from __future__ import annotations

from pathlib import Path

from cartstream.models.catalog import Catalog
from cartstream.models.promotion_gate import GateBounds, SetScore, judge, run_gate
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
