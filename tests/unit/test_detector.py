from __future__ import annotations

import numpy as np
import pytest
import torch

from cartstream.exceptions import ConfigurationError
from cartstream.models.catalog import Catalog
from cartstream.models.detector import CartDetector, make_targets
from cartstream.models.evaluate import average_precision, count_error_kinds, score_detections
from cartstream.models.inference import FrameDetections, decode_peaks
from cartstream.models.train import (
    TrainConfig,
    render_dataset,
    scene_plan,
    train_detector,
)


def test_peaks_decode_to_boxes() -> None:
    peaks = np.zeros((2, 5, 28, 28), np.float32)
    sizes = np.zeros((2, 2, 28, 28), np.float32)
    offsets = np.full((2, 2, 28, 28), 0.5, np.float32)
    peaks[0, 3, 14, 7] = 0.9  # class 3 centred at x=(7.5)/28, y=(14.5)/28
    sizes[0, :, 14, 7] = (0.2, 0.1)
    peaks[0, 1, 2, 2] = 0.2  # below threshold
    found = decode_peaks(peaks, sizes, offsets, threshold=0.3, top_k=10)
    assert [f.classes.tolist() for f in found] == [[3], []]
    x, y = 7.5 / 28, 14.5 / 28
    np.testing.assert_allclose(found[0].boxes[0], [x - 0.1, y - 0.05, x + 0.1, y + 0.05], atol=1e-6)
    assert found[0].best_score == np.float32(0.9) and found[1].best_score == 0.0


def test_targets_mark_each_centre() -> None:
    t = make_targets([[(2, 0.1, 0.1, 0.3, 0.5)], []], num_classes=4)
    assert t.heat.shape == (2, 4, 28, 28)
    assert t.heat[0, 2].max() == 1.0 and t.heat[1].max() == 0.0
    assert t.mask.tolist()[0][:2] == [1.0, 0.0]
    np.testing.assert_allclose(t.size[0, 0], [0.2, 0.4])


def test_average_precision() -> None:
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == 1.0
    assert average_precision(np.array([0.5, 0.5]), np.array([1.0, 0.5])) == 0.5


def test_perfect_and_wrong_detections_score(catalog: Catalog) -> None:
    truth = [[(0, 0.1, 0.1, 0.4, 0.4), (5, 0.5, 0.5, 0.9, 0.9)]]
    perfect = [
        FrameDetections(
            np.array([0, 5]),
            np.array([0.9, 0.8], np.float32),
            np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]], np.float32),
        )
    ]
    report = score_detections(catalog, truth, perfect, 0.3)
    assert report.map50 == 1.0 and report.count_accuracy == 1.0
    swapped = [FrameDetections(np.array([1, 5]), perfect[0].scores, perfect[0].boxes)]
    report = score_detections(catalog, truth, swapped, 0.3)
    assert report.map50 == 0.5 and report.count_accuracy == 0.0
    assert report.confusions == [(catalog.skus[0].sku, catalog.skus[1].sku, 1)]


def test_a_few_training_steps_reduce_the_loss(catalog: Catalog) -> None:
    data = render_dataset(catalog, 64, seed=3)
    result = train_detector(
        catalog,
        TrainConfig(images=64, epochs=6, batch_size=16, lr=3e-3, width=8, threads=1),
        data=data,
    )
    assert result.steps == 24
    assert result.history[-1]["focal"] < result.history[0]["focal"]
    out = result.model(torch.zeros(1, 224, 224, 3, dtype=torch.uint8))
    assert [tuple(o.shape) for o in out] == [
        (1, len(catalog), 28, 28),
        (1, 2, 28, 28),
        (1, 2, 28, 28),
    ]


def test_training_runs_where_it_is_told(catalog: Catalog) -> None:
    """On a CUDA device when asked (the loss's targets follow the model there) and back on the
    CPU for export; asking for CUDA where torch sees none is a clear error."""
    data = render_dataset(catalog, 16, seed=4)
    config = TrainConfig(images=16, epochs=1, batch_size=8, width=8, threads=1, device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigurationError, match=r"train-detector --device=cuda"):
            train_detector(catalog, config, data=data)
        return
    result = train_detector(catalog, config, data=data)
    assert result.steps == 2 and result.device.startswith("cuda (")
    assert all(p.device.type == "cpu" for p in result.model.parameters())


def test_detector_is_compact(catalog: Catalog) -> None:
    model = CartDetector(len(catalog))
    assert sum(p.numel() for p in model.parameters()) < 500_000


def test_the_context_stage_widens_the_view_and_keeps_the_outputs(catalog: Catalog) -> None:
    """Which input columns a cell's class scores depend on (their gradient): 87 pixels wide
    without the stride-16 stage, about 167 with it."""
    torch.manual_seed(0)
    for context, width in ((False, 87), (True, 167)):
        model = CartDetector(len(catalog), 8, context).eval()
        frame = torch.full((1, 224, 224, 3), 128.0, requires_grad=True)
        logits, _ = model.raw(frame)
        assert tuple(logits.shape) == (1, len(catalog), 28, 28)
        logits[0, :, 14, 12].sum().backward()  # type: ignore[no-untyped-call]
        assert frame.grad is not None
        columns = (frame.grad[0].abs().sum(dim=(0, 2)) > 0).nonzero().flatten()
        assert int(columns.max() - columns.min()) + 1 == width


def test_sibling_scenes_show_an_item_beside_its_brand_sibling(catalog: Catalog) -> None:
    pairs = catalog.brand_siblings
    assert "DAI-MILK-2000" in pairs["DAI-MILK-1000"] and pairs["DAI-EGGS-6"] == ("DAI-EGGS-12",)
    rng = np.random.default_rng(1)
    plans = [scene_plan(rng, catalog, 1.0) for _ in range(50)]
    for hand, basket in plans:
        shown = [hand, *basket] if hand else basket
        assert shown[1] in pairs[shown[0]]
    # a share of 0 draws exactly as before: the held-out scenes do not move
    plain = [scene_plan(np.random.default_rng(2), catalog) for _ in range(3)]
    assert plain == [scene_plan(np.random.default_rng(2), catalog, 0.0) for _ in range(3)]


def test_sibling_confusions_count_only_same_brand_mistakes(catalog: Catalog) -> None:
    one, two, other = (
        catalog.index("DAI-MILK-1000"),
        catalog.index("DAI-MILK-2000"),
        catalog.index("BAK-WHITE-800"),
    )
    truth = [[(one, 0.1, 0.1, 0.4, 0.4)], [(one, 0.1, 0.1, 0.4, 0.4)]]
    boxes = np.array([[0.1, 0.1, 0.4, 0.4]], np.float32)
    score = np.array([0.9], np.float32)
    found = [FrameDetections(np.array([two]), score, boxes)]
    found.append(FrameDetections(np.array([other]), score, boxes))
    report = score_detections(catalog, truth, found, 0.3)
    assert len(report.confusions) == 2 and report.sibling_confusions == 1


def test_wrong_counts_are_told_apart_by_what_is_wrong(catalog: Catalog) -> None:
    truth = [[(0, 0.1, 0.1, 0.4, 0.4), (5, 0.5, 0.5, 0.9, 0.9)]] * 4
    both = np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]], np.float32)
    found = [
        FrameDetections(np.array([0, 5]), np.array([0.9, 0.8], np.float32), both),  # right
        FrameDetections(np.array([0, 6]), np.array([0.9, 0.8], np.float32), both),  # swapped
        FrameDetections(np.array([0, 5]), np.array([0.9, 0.2], np.float32), both),  # missed
        FrameDetections(  # one too many, away from both items
            np.array([0, 5, 7]),
            np.array([0.9, 0.8, 0.5], np.float32),
            np.vstack([both, [[0.6, 0.0, 0.9, 0.3]]]).astype(np.float32),
        ),
    ]
    report = score_detections(catalog, truth, found, 0.3)
    assert report.count_accuracy == 0.25
    assert report.count_errors == {"swapped": 1, "missed": 1, "extra": 1}
    assert count_error_kinds(np.array(both), np.array([0, 5]), both[:1], np.array([3])) == {
        "swapped",
        "missed",
    }
