"""Drift monitoring's arithmetic (models/drift.py): PSI, the reference, sliding windows per
store camera and SKU, and a Detection record read as an observation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cartstream.models.drift import DriftMonitor, DriftReference, Observation, psi
from cartstream.services.tools.drift import Stretches


def frame(store: str, brightness: float, score: float = 0.9, sku: str = "milk-1l") -> Observation:
    return Observation(store, 0, brightness, 45.0, score, 1, ((sku, score),))


def reference(n: int = 400) -> DriftReference:
    rng = np.random.default_rng(1)
    frames = [frame("s", float(b)) for b in rng.normal(95, 12, n)]
    return DriftReference.from_observations(frames, "test")


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    ref = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(ref, np.array([25, 25, 25, 25])) == pytest.approx(0.0)
    assert psi(ref, np.array([30, 20, 27, 23])) < 0.1
    assert psi(ref, np.array([100, 0, 0, 0])) > 2.0


def test_a_darker_store_drifts_and_a_steady_one_does_not() -> None:
    monitor = DriftMonitor(reference(), window=100, min_samples=50, alert_psi=0.25)
    rng = np.random.default_rng(2)
    for _ in range(49):
        monitor.observe(frame("steady", float(rng.normal(95, 12))))
        monitor.observe(frame("dark", float(rng.normal(95, 12)) * 0.6))
    stores = [r for r in monitor.readings() if r.scope[0] == "store"]
    assert stores == []  # under min_samples: nothing to say yet
    for _ in range(60):
        monitor.observe(frame("steady", float(rng.normal(95, 12))))
        monitor.observe(frame("dark", float(rng.normal(95, 12)) * 0.6))
    drifting = {(r.scope, r.feature) for r in monitor.readings() if r.drifting}
    # the store's frames are darker; its boxes (one SKU, steady scores) are not a SKU drift
    assert drifting == {(("store", "dark", "0"), "brightness")}
    for _ in range(100):  # the lights are fixed: the window forgets the dark frames
        monitor.observe(frame("dark", float(rng.normal(95, 12))))
    assert not any(r.drifting for r in monitor.readings())
    (steady,) = [
        r for r in monitor.readings() if r.scope[1] == "steady" and r.feature == "brightness"
    ]
    assert steady.samples == 100 and steady.attributes() == {
        "scope": "store",
        "feature": "brightness",
        "store": "steady",
        "camera": "0",
    }


def test_a_sku_losing_confidence_drifts_on_its_own_scope() -> None:
    monitor = DriftMonitor(reference(), window=100, min_samples=50, alert_psi=0.25)
    for _ in range(100):
        monitor.observe(frame("s", 95.0, score=0.55))
    by_scope = {(r.scope, r.feature): r for r in monitor.readings()}
    assert by_scope[(("sku", "milk-1l"), "sku_confidence")].drifting
    assert by_scope[(("sku", "milk-1l"), "sku_confidence")].attributes()["sku"] == "milk-1l"


def test_the_reference_round_trips_and_refuses_other_bins(tmp_path: Path) -> None:
    ref = reference()
    path = tmp_path / "detector.drift.json"
    ref.save(path)
    assert DriftReference.load(path) == ref
    assert set(ref.skus) == {"milk-1l"}  # 400 boxes: enough to monitor
    assert reference(100).skus == {}  # too few boxes for a SKU reference
    data = json.loads(path.read_text())
    data["edges"]["brightness"] = [0, 128, 256]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="other bins"):
        DriftReference.load(path)


def test_a_detection_record_is_read_as_an_observation() -> None:
    def box(sku: str, score: float, y: float) -> dict[str, object]:
        return {"sku": sku, "score": score, "x0": 0.1, "x1": 0.3, "y0": y - 0.05, "y1": y + 0.05}

    record = {
        "store_id": "store-001",
        "camera_id": 1,
        "brightness": 88.0,
        "contrast": 41.0,
        "boxes": [box("eggs-6", 0.9, 0.3), box("milk-1l", 0.7, 0.8)],
    }
    obs = Observation.of_detection(record, hand_zone_y=0.52)
    assert obs.in_hand == 1 and obs.best_score == pytest.approx(0.9)
    assert obs.boxes == (("eggs-6", 0.9), ("milk-1l", 0.7))
    empty = Observation.of_detection({**record, "boxes": []}, 0.52)
    assert empty.best_score == 0.0 and empty.in_hand == 0


def test_the_detect_stage_watches_its_detections_and_logs_a_drifting_camera(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cartstream.core.ids import now_ms
    from cartstream.core.settings import Settings
    from cartstream.models.catalog import Catalog
    from cartstream.models.train import render_dataset
    from cartstream.services.tools.bench import frame_records
    from cartstream.streams.detect import DetectStage
    from cartstream.streams.stage import Inbound

    catalog = Catalog.load()
    images, _ = render_dataset(catalog, 16, seed=77)
    path = tmp_path / "reference.drift.json"
    reference().save(path)  # brightness around 95
    settings = Settings().with_overrides(
        detect={
            "threads": 1,
            "drift_reference": path,
            "drift_window": 16,
            "drift_min_samples": 16,
        }
    )
    stage = DetectStage(settings, catalog)
    stage.start()
    try:
        assert stage.drift is not None and stage.drift_readings() == []
        dark = frame_records((images * 0.3).astype(np.uint8), 32)
        inbounds = [Inbound("cart.frames", 0, n, b"c", now_ms()) for n in range(len(dark))]
        with caplog.at_level("WARNING"):
            stage.handle_batch(dark, inbounds, [b""] * len(dark), now_ms())
        readings = {(r.scope, r.feature): r for r in stage.drift_readings()}
        assert readings[(("store", "s", "0"), "brightness")].drifting
        assert "detect: drift: store/s/0 brightness" in caplog.text
    finally:
        stage.close()


def test_alert_stretches_are_measured_from_the_first_look_on_to_the_first_off() -> None:
    looks = [(0, False), (10, True), (20, True), (30, False), (40, True), (90, True), (95, False)]
    stretches = Stretches()
    for at, on in looks:
        stretches.look(at, on)
    assert (stretches.first_ms, stretches.longest_ms, stretches.since) == (20, 55, None)
    still_on = Stretches()
    for at, on in [(5, False), (7, True), (30, True)]:
        still_on.look(at, on)
    assert (still_on.first_ms, still_on.longest_ms, still_on.since) == (None, 23, 7)
