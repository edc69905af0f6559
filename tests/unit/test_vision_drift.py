"""Vision drift per SKU (models/vision_drift.py, streams/vision_watch.py): which basket changes
are trials, the binomial surprise, the honest rates, the window, and the reference file."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cartstream.models.drift import DriftReference, Observation
from cartstream.models.vision_drift import (
    MIN_RATE,
    VisionDriftMonitor,
    VisionReference,
    binomial_surprise,
    trial,
)
from cartstream.streams.vision_watch import VisionWatch


def change(
    weight: str | None, vision: str | None, action: str = "ADD", frames: int = 4
) -> dict[str, Any]:
    return {"action": action, "weight_sku": weight, "vision_sku": vision, "frames_seen": frames}


def test_a_change_is_a_trial_only_when_the_weight_names_a_sku_the_cameras_could_see() -> None:
    assert trial(change("milk", "milk")) == ("milk", True)
    assert trial(change("milk", "eggs")) == ("milk", False)
    assert trial(change("milk", None)) == ("milk", False)  # nothing seen in hand: unconfirmed
    assert trial(change("milk", "milk", action="REMOVE")) == ("milk", True)
    assert trial(change(None, "milk")) is None  # no catalog item fits the weight
    assert trial(change("milk", None, frames=0)) is None  # blind cameras: no evidence
    assert trial(change("milk", None, frames=-1)) is None  # vision not used
    assert trial(change("milk", None, action="CHECKOUT_REQUESTED")) is None


def test_binomial_surprise_is_minus_log10_of_the_upper_tail() -> None:
    assert binomial_surprise(10, 0, 0.3) == 0.0
    assert binomial_surprise(10, 10, 0.1) == pytest.approx(10.0)
    # P(X >= 2 | n=3, p=1/2) = (3 + 1) / 8
    assert binomial_surprise(3, 2, 0.5) == pytest.approx(-np.log10(0.5))
    assert binomial_surprise(20, 4, 0.2) < 1.0  # the expected count is unremarkable


def test_honest_rates_are_per_sku_shrunk_towards_the_pool_and_floored() -> None:
    ref = VisionReference({"milk-1l": [30, 100], "eggs": [0, 100], "bread": [1, 2]})
    assert ref.pooled_rate == pytest.approx(31 / 202)
    assert ref.rate("milk-1l") == pytest.approx((30 + 20 * 31 / 202) / 120)
    assert ref.rate("eggs") >= MIN_RATE
    # seen twice in the reference: mostly the pool's rate, not 1/2
    assert abs(ref.rate("bread") - ref.pooled_rate) < abs(ref.rate("bread") - 0.5)
    assert ref.rate("never-seen") == pytest.approx(ref.pooled_rate)
    assert VisionReference.from_changes(
        [change("a", "a"), change("a", None), change("b", "b"), change(None, "b")]
    ).counts == {"a": [1, 2], "b": [0, 1]}


def test_a_sku_the_cameras_stop_confirming_drifts_and_an_honest_one_does_not() -> None:
    ref = VisionReference({"milk": [25, 100], "eggs": [10, 100]})
    monitor = VisionDriftMonitor(ref, window=20, min_samples=8, alert_surprise=5.0)
    rng = random.Random(3)
    for _ in range(7):
        monitor.observe(change("milk", None))
    assert monitor.readings() == []  # under min_samples: nothing to say yet
    for _ in range(300):  # eggs at its honest rate
        monitor.observe(change("eggs", "eggs" if rng.random() > 0.1 else None))
        assert not any(r.drifting for r in monitor.readings() if r.sku == "eggs")
    for _ in range(5):  # repackaged milk: vision never confirms it
        monitor.observe(change("milk", None))
    milk = monitor.reading("milk")
    assert milk is not None and milk.drifting
    assert (milk.unconfirmed, milk.samples) == (12, 12)
    for _ in range(20):  # the window slides: confirmed again, back within bounds
        monitor.observe(change("milk", "milk"))
    milk = monitor.reading("milk")
    assert milk is not None and not milk.drifting and milk.unconfirmed == 0


def test_honest_trials_before_a_change_do_not_dilute_it() -> None:
    monitor = VisionDriftMonitor(VisionReference({"milk": [50, 100]}), 40, 10, 5.0)
    for n in range(25):  # honest: every other change unconfirmed
        monitor.observe(change("milk", "milk" if n % 2 else None))
    for _ in range(15):  # then none confirmed: 15 of 40 would be no surprise at p = 0.5
        monitor.observe(change("milk", None))
    milk = monitor.reading("milk")
    assert milk is not None and (milk.unconfirmed, milk.samples) == (16, 16)
    assert milk.surprise == pytest.approx(16 * np.log10(2), rel=1e-6) and not milk.drifting
    monitor.observe(change("milk", None))
    milk = monitor.reading("milk")
    assert milk is not None and milk.drifting and (milk.unconfirmed, milk.samples) == (17, 17)


def test_the_honest_rates_travel_in_the_drift_reference_file(tmp_path: Path) -> None:
    frames = [Observation("s", 0, 90.0, 45.0, 0.9, 1, (("milk", 0.9),))] * 10
    plain = DriftReference.from_observations(frames, "test")
    plain.save(tmp_path / "old.drift.json")
    assert DriftReference.load(tmp_path / "old.drift.json").vision is None
    with_vision = DriftReference(
        plain.features, plain.skus, plain.frames, plain.source, VisionReference({"milk": [3, 9]})
    )
    with_vision.save(tmp_path / "new.drift.json")
    loaded = DriftReference.load(tmp_path / "new.drift.json")
    assert loaded.vision is not None and loaded.vision.counts == {"milk": [3, 9]}


def test_the_watch_logs_a_sku_when_it_starts_drifting_and_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = VisionWatch(VisionDriftMonitor(VisionReference({"milk": [10, 100]}), 10, 5, 3.0))
    with caplog.at_level(logging.INFO, logger="cartstream.streams.vision_watch"):
        for _ in range(6):
            watch.observe(change("milk", None))
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "milk unconfirmed by the cameras" in warnings[0].message
        for _ in range(10):
            watch.observe(change("milk", "milk"))
        assert any("milk back within bounds" in r.message for r in caplog.records)
    assert [r.sku for r in watch.readings()] == ["milk"]


def test_a_reason_stage_watches_against_the_bundled_reference_and_meters_it() -> None:
    from cartstream.core import metrics
    from cartstream.core.settings import Settings
    from cartstream.models.catalog import Catalog
    from cartstream.streams.reason import ReasonStage
    from cartstream.streams.worker import _meter_drift

    stage = ReasonStage(Settings(), Catalog.load())
    stage.start()
    assert stage.vision_watch is not None  # the committed reference has honest rates
    for _ in range(20):
        stage.vision_watch.observe(change("DAI-MILK-1000", None))
    before = list(metrics._drift_sources["vision_surprise"])
    try:
        _meter_drift(stage)
        seen = list(metrics._observe_drift("vision_surprise")(None))  # type: ignore[arg-type]
    finally:
        metrics._drift_sources["vision_surprise"][:] = before
    (observed,) = seen
    assert observed.attributes == {"sku": "DAI-MILK-1000"} and observed.value >= 5.0
    weight_only = ReasonStage(Settings().with_overrides(reason={"mode": "weight"}), Catalog.load())
    weight_only.start()
    assert weight_only.vision_watch is None and weight_only.vision_drift_readings() == []


def test_the_reason_stage_reads_the_reference_of_the_registrys_promoted_model(
    tmp_path: Path,
) -> None:
    """A model registered with a drift reference beside it carries it into the registry, and a
    reason stage on that registry takes its honest rates, as the detect stage takes its
    frame features; a registry with nothing promoted falls back to the bundled reference."""
    import dataclasses
    import json

    from cartstream.core.settings import Settings
    from cartstream.models.catalog import Catalog
    from cartstream.models.inference import BUNDLED_MODEL
    from cartstream.models.registry import Registry, content_version
    from cartstream.streams.reason import ReasonStage

    bundled = DriftReference.load(BUNDLED_MODEL.with_suffix(".drift.json"))
    model = tmp_path / "trained" / "detector.onnx"
    model.parent.mkdir()
    model.write_bytes(b"a retrained model")
    card = {"version": content_version(model), "classes": ["A"]}
    model.with_suffix(".card.json").write_text(json.dumps(card))
    own = VisionReference({"DAI-MILK-1000": [1, 100]})
    dataclasses.replace(bundled, vision=own).save(model.with_suffix(".drift.json"))

    def watched(registry: Path) -> VisionReference:
        settings = Settings().with_overrides(detect={"registry": registry})
        stage = ReasonStage(settings, Catalog.load())
        stage.start()
        assert stage.vision_watch is not None
        return stage.vision_watch.monitor.reference

    registry = Registry(tmp_path / "registry")
    version = registry.register(model).version
    assert watched(tmp_path / "registry").counts == bundled.vision.counts  # nothing promoted
    registry.promote(version)
    assert watched(tmp_path / "registry").counts == own.counts
