"""The committed detector artifact: loads, is what its card says, gives the recorded detections."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from cartstream.models.catalog import Catalog
from cartstream.models.inference import BUNDLED_MODEL, DetectorRuntime, model_card
from cartstream.models.train import render_dataset

GOLDEN = Path(__file__).parent.parent / "data" / "detector_golden.json"
SEED = 777


def detections(runtime: DetectorRuntime) -> list[dict[str, list[float]]]:
    frames, _ = render_dataset(Catalog.load(), 6, seed=SEED)
    return [
        {
            "classes": f.classes.tolist(),
            "scores": f.scores.tolist(),
            "boxes": f.boxes.ravel().tolist(),
        }
        for f in runtime.run(frames)
    ]


def test_artifact_matches_its_card(catalog: Catalog) -> None:
    card = model_card(BUNDLED_MODEL)
    data = BUNDLED_MODEL.read_bytes()
    assert len(data) <= 10 * 1024 * 1024
    assert card["version"] == "det-" + hashlib.sha256(data).hexdigest()[:12]
    assert card["classes"] == [s.sku for s in catalog.skus]
    assert card["metrics"]["map50"] >= 0.95


def test_committed_artifact_gives_the_recorded_detections() -> None:
    runtime = DetectorRuntime(threads=1).initialize()
    found = detections(runtime)
    if os.environ.get("CARTSTREAM_UPDATE_GOLDEN"):
        GOLDEN.write_text(
            json.dumps({"version": runtime.version, "seed": SEED, "frames": found}, indent=1)
        )
    golden = json.loads(GOLDEN.read_text())
    assert golden["version"] == runtime.version, "artifact changed: regenerate the golden file"
    assert len(found) == len(golden["frames"])
    for got, want in zip(found, golden["frames"], strict=True):
        assert got["classes"] == want["classes"]
        np.testing.assert_allclose(got["scores"], want["scores"], atol=2e-3)
        np.testing.assert_allclose(got["boxes"], want["boxes"], atol=2e-3)
    assert sum(len(f["classes"]) for f in found) > 0


def test_batch_size_does_not_change_detections() -> None:
    runtime = DetectorRuntime(threads=1).initialize()
    frames, _ = render_dataset(Catalog.load(), 6, seed=SEED)
    together = runtime.run(frames)
    alone = [runtime.run(frames[i : i + 1])[0] for i in range(len(frames))]
    for a, b in zip(together, alone, strict=True):
        assert a.classes.tolist() == b.classes.tolist()
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
