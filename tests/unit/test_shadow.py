"""Shadow deployment: the detect stage runs a registered candidate beside the model in use on a
fixed share of frames and publishes only to the shadow topic; the report compares them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.registry import Registry
from cartstream.models.train import render_dataset
from cartstream.schemas.records import ShadowDetection
from cartstream.services.tools.bench import frame_records
from cartstream.services.tools.shadow_report import compare
from cartstream.streams.detect import DetectStage, shadowed
from cartstream.streams.stage import Inbound
from tests.model_variants import copy_bundled, variant

FRAMES = 24


def run_stage(settings: Settings, catalog: Catalog, records: list[dict[str, Any]]) -> list[Any]:
    stage = DetectStage(settings, catalog)
    stage.start()
    try:
        inbounds = [Inbound("cart.frames", 0, n, b"c", now_ms()) for n in range(len(records))]
        return stage.handle_batch(records, inbounds, [b""] * len(records), now_ms())
    finally:
        stage.close()


def test_the_candidate_sees_its_share_of_frames_and_changes_no_detection(
    tmp_path: Path, catalog: Catalog
) -> None:
    registry = Registry(tmp_path / "registry")
    champion = registry.register(copy_bundled(tmp_path / "a"))
    candidate = registry.register(variant(tmp_path / "b", 0.5))  # a worse model
    registry.promote(champion.version)
    images, _ = render_dataset(catalog, 6, seed=5)
    records = frame_records(images, FRAMES)
    base = Settings().with_overrides(detect={"registry": registry.root, "threads": 1})
    plain = run_stage(base, catalog, records)
    topics = base.topics
    for share in (0.0, 0.5, 1.0):
        settings = base.with_overrides(
            detect={
                **base.detect.model_dump(),
                "shadow_version": candidate.version,
                "shadow_share": share,
            }
        )
        outputs = run_stage(settings, catalog, records)
        shadows = [o for o in outputs if o.topic == topics.detections_shadow]
        others = [o for o in outputs if o.topic != topics.detections_shadow]
        assert [(o.topic, o.record) for o in others] == [(o.topic, o.record) for o in plain]
        chosen = {r["event_id"] for r in records if shadowed(str(r["event_id"]), share)}
        assert {o.record["frame_event_id"] for o in shadows} == chosen
        assert all(o.record["candidate_version"] == candidate.version for o in shadows)
        if share == 1.0:
            assert len(shadows) == FRAMES
            champion_boxes = {
                o.record["frame_event_id"]: o.record["champion_boxes"] for o in shadows
            }
            detections = {o.record["frame_event_id"]: o.record["boxes"] for o in plain}
            assert champion_boxes == {f: detections[f] for f in champion_boxes}
            report = compare([o.record for o in shadows], {}, base.detect.score_threshold)
            assert report.frames == FRAMES and report.agreement < 1.0  # the worse model differs
    assert 0 < sum(shadowed(str(r["event_id"]), 0.5) for r in records) < FRAMES


def box(sku: str, score: float) -> dict[str, Any]:
    return {"sku": sku, "score": score, "x0": 0.1, "y0": 0.1, "x1": 0.2, "y1": 0.2}


def shadow(frame: str, champion: list[Any], candidate: list[Any], ms: float) -> ShadowDetection:
    return {
        "event_id": f"s-{frame}",
        "frame_event_id": frame,
        "cart_id": "c",
        "store_id": "s",
        "camera_id": 0,
        "capture_time_ms": 0,
        "champion_version": "det-a",
        "candidate_version": "det-b",
        "champion_boxes": champion,
        "candidate_boxes": candidate,
        "champion_ms": 2.0,
        "candidate_ms": ms,
    }


def test_the_report_counts_agreement_confusions_and_verified_accuracy() -> None:
    records = [
        shadow("f1", [box("MILK-1L", 0.9)], [box("MILK-1L", 0.8)], 3.0),
        shadow("f2", [box("MILK-1L", 0.9)], [box("MILK-2L", 0.7)], 3.0),
        shadow("f3", [box("EGGS-6", 0.5), box("BREAD", 0.1)], [box("EGGS-12", 0.6)], 5.0),
        shadow("f4", [], [box("BREAD", 0.2)], 3.0),  # below the threshold: both see nothing
    ]
    records.append(records[1])  # re-delivered: counted once
    verified = {"f2": frozenset({"MILK-2L"}), "f3": frozenset({"EGGS-6"})}
    report = compare(records, verified, threshold=0.3)
    out = report.as_dict()
    assert out["frames"] == 4 and out["agreement"] == 0.5
    assert {(c["champion"], c["candidate"]) for c in out["confusions"]} == {
        ("MILK-1L", "MILK-2L"),
        ("EGGS-6", "EGGS-12"),
    }
    assert out["verified_frames"] == 2
    assert out["champion_accuracy_on_verified"] == 0.5
    assert out["candidate_accuracy_on_verified"] == 0.5
    assert out["candidate_ms_p50_p99"][0] == 3.0
    assert out["models"] == [{"champion": "det-a", "candidate": "det-b", "frames": 4}]
