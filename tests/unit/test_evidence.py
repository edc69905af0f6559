"""Reason's record of what the cameras saw: the frame barrier, the window, the hand zone."""

from __future__ import annotations

from typing import Any

import numpy as np

from cartstream.models.catalog import Catalog
from cartstream.streams.evidence import FrameLedger, Sighting, sighting, usable


def detection(seq: int, ms: int, *boxes: tuple[str, float, float]) -> Any:
    """Boxes as (sku, score, centre y)."""
    return {
        "frame_event_id": f"f{seq}",
        "camera_id": 1,
        "frame_sequence": seq,
        "brightness": -1.0,  # as a v1 detection decodes: not measured
        "contrast": -1.0,
        "capture_time_ms": ms,
        "boxes": [
            {"sku": sku, "score": score, "x0": 0.3, "x1": 0.5, "y0": y - 0.1, "y1": y + 0.1}
            for sku, score, y in boxes
        ],
    }


def test_only_boxes_in_the_hand_zone_count(catalog: Catalog) -> None:
    d = detection(0, 1000, ("BEV-COLA-330", 0.9, 0.3), ("PAN-TUNA-160", 0.8, 0.8))
    ms, boxes, count, camera, fine, frame_id, trace = sighting(d, catalog, zone_y=0.52)
    assert (ms, camera, fine, frame_id, trace) == (1000, 1, True, "f0", "")
    assert boxes == [(catalog.index("BEV-COLA-330"), 0.9)]
    assert count == 1


def test_two_units_in_hand_are_counted_once_per_sku_score(catalog: Catalog) -> None:
    d = detection(0, 1000, ("BEV-COLA-330", 0.9, 0.3), ("BEV-COLA-330", 0.6, 0.35))
    _, boxes, count, *_ = sighting(d, catalog, zone_y=0.52)
    assert boxes == [(catalog.index("BEV-COLA-330"), 0.9)]
    assert count == 2


def test_dark_or_uniform_frames_are_not_usable(catalog: Catalog) -> None:
    covered = {**detection(0, 1000), "brightness": 8.0, "contrast": 1.5}
    flat = {**detection(1, 1000), "brightness": 90.0, "contrast": 0.5}
    fine = {**detection(2, 1000), "brightness": 90.0, "contrast": 30.0}
    assert [usable(d) for d in (covered, flat, fine)] == [False, False, True]
    assert usable(detection(3, 1000))  # a v1 detection carries no measurement


def frame(
    ms: int, boxes: list[tuple[int, float]], count: int, camera: int, fine: bool = True
) -> Sighting:
    trace = f"tp-{ms}-{camera}" if fine else ""
    return Sighting(ms, boxes, count, camera, fine, f"f{ms}-{camera}", trace)


def test_the_barrier_waits_for_every_frame_up_to_it_in_any_order() -> None:
    ledger = FrameLedger()
    for seq in (0, 2, 3):
        assert ledger.note(seq, frame(seq * 100, [], 0, 0))
    assert ledger.covers(0)
    assert not ledger.covers(2)  # frame 1 is still missing
    assert ledger.note(1, frame(100, [], 0, 1))
    assert ledger.covers(3)
    assert not ledger.note(2, frame(200, [], 0, 0))  # a re-delivery counts once
    assert len(ledger.sightings) == 4
    assert ledger.cameras == [0, 1]


def test_a_window_is_the_usable_frames_that_saw_a_hand(catalog: Catalog) -> None:
    ledger = FrameLedger()
    k = catalog.index("BEV-COLA-330")
    ledger.note(0, frame(900, [(k, 0.4)], 1, 0))  # before the window
    ledger.note(1, frame(1000, [(k, 0.9)], 2, 0))
    ledger.note(2, frame(1000, [], 0, 1))  # camera 1 saw no hand: tells nothing
    ledger.note(3, frame(1200, [(k, 0.7)], 2, 0))
    ledger.note(4, frame(1200, [(k, 0.8)], 1, 1, fine=False))  # dark: ignored
    window = ledger.window(1000, 1200, len(catalog))
    assert window is not None
    assert window.scores.shape == (2, len(catalog))
    assert np.allclose(window.scores[:, k], [0.9, 0.7])
    assert window.counts.tolist() == [2, 2]
    assert (window.frames, window.cameras) == (3, (0, 1))  # the dark frame is not counted
    assert window.frame_ids == ("f1000-0", "f1000-1", "f1200-0", "f1200-1")
    # a basket change links to the frames' traces (the dark frame had none to link)
    assert window.frame_traces == ("tp-1000-0", "tp-1000-1", "tp-1200-0")
    assert ledger.window(5000, 6000, len(catalog)) is None
    late = ledger.window(1200, 1200, len(catalog))
    assert late is not None and late.cameras == (0,)
    assert ledger.blind_cameras(late) == [1]  # only a dark frame from camera 1
    assert ledger.blind_cameras(None) == []  # no frame at all: nothing moved
    ledger.note(5, frame(1500, [], 0, 0))
    idle = ledger.window(1500, 1500, len(catalog))
    assert ledger.blind_cameras(idle) == []  # one idle frame: nothing to compare
    ledger.note(6, frame(1600, [(k, 0.9)], 1, 0))
    movement = ledger.window(1500, 1600, len(catalog))
    assert ledger.blind_cameras(movement) == [1]  # camera 1 stayed silent
    ledger.forget_before(1100)
    assert [s.capture_ms for s in ledger.sightings] == [1200, 1200, 1500, 1600]
