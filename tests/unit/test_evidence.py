"""Reason's record of what the cameras saw: the frame barrier, the window, the hand zone."""

from __future__ import annotations

from typing import Any

import numpy as np

from cartstream.models.catalog import Catalog
from cartstream.streams.evidence import FrameLedger, sighting


def detection(seq: int, ms: int, *boxes: tuple[str, float, float]) -> Any:
    """Boxes as (sku, score, centre y)."""
    return {
        "frame_sequence": seq,
        "capture_time_ms": ms,
        "boxes": [
            {"sku": sku, "score": score, "x0": 0.3, "x1": 0.5, "y0": y - 0.1, "y1": y + 0.1}
            for sku, score, y in boxes
        ],
    }


def test_only_boxes_in_the_hand_zone_count(catalog: Catalog) -> None:
    d = detection(0, 1000, ("BEV-COLA-330", 0.9, 0.3), ("PAN-TUNA-160", 0.8, 0.8))
    ms, boxes, count = sighting(d, catalog, zone_y=0.52)
    assert ms == 1000
    assert boxes == [[catalog.index("BEV-COLA-330"), 0.9]]
    assert count == 1


def test_two_units_in_hand_are_counted_once_per_sku_score(catalog: Catalog) -> None:
    d = detection(0, 1000, ("BEV-COLA-330", 0.9, 0.3), ("BEV-COLA-330", 0.6, 0.35))
    _, boxes, count = sighting(d, catalog, zone_y=0.52)
    assert boxes == [[catalog.index("BEV-COLA-330"), 0.9]]
    assert count == 2


def test_the_barrier_waits_for_every_frame_up_to_it_in_any_order() -> None:
    ledger = FrameLedger.new()
    for seq in (0, 2, 3):
        assert FrameLedger.note(ledger, seq, [seq * 100, [], 0])
    assert FrameLedger.covers(ledger, 0)
    assert not FrameLedger.covers(ledger, 2)  # frame 1 is still missing
    assert FrameLedger.note(ledger, 1, [100, [], 0])
    assert FrameLedger.covers(ledger, 3)
    assert not FrameLedger.note(ledger, 2, [200, [], 0])  # a re-delivery is not counted twice
    assert len(ledger["sightings"]) == 4


def test_evidence_is_the_frames_in_the_window_that_saw_a_hand(catalog: Catalog) -> None:
    ledger = FrameLedger.new()
    k = catalog.index("BEV-COLA-330")
    FrameLedger.note(ledger, 0, [900, [[k, 0.4]], 1])  # before the window
    FrameLedger.note(ledger, 1, [1000, [[k, 0.9]], 2])
    FrameLedger.note(ledger, 2, [1100, [], 0])  # camera blocked: tells nothing
    FrameLedger.note(ledger, 3, [1200, [[k, 0.7]], 2])
    found = FrameLedger.evidence(ledger, 1000, 1200, len(catalog))
    assert found is not None
    scores, counts = found
    assert scores.shape == (2, len(catalog))
    assert np.allclose(scores[:, k], [0.9, 0.7])
    assert counts.tolist() == [2, 2]
    assert FrameLedger.evidence(ledger, 5000, 6000, len(catalog)) is None
    empty = FrameLedger.evidence(ledger, 1100, 1100, len(catalog))
    assert empty is not None and empty[0].shape == (0, len(catalog))
    FrameLedger.forget_before(ledger, 1100)
    assert [s[0] for s in ledger["sightings"]] == [1100, 1200]
