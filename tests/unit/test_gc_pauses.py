"""The collector's pauses are recorded, and start-up's heap is frozen out of its sight."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from cartstream.core.gc_pauses import freeze_startup_heap, record_pauses


class Recorded:
    def __init__(self) -> None:
        self.points: list[tuple[float, dict[str, Any] | None]] = []

    def record(self, amount: float, attributes: dict[str, Any] | None = None) -> None:
        self.points.append((amount, attributes))


def test_every_collection_records_its_pause_and_generation() -> None:
    recorded = Recorded()
    callback = record_pauses(recorded)
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        gc.callbacks.remove(callback)
    generations = [a["generation"] for _, a in recorded.points if a]
    assert generations[-2:] == ["0", "2"]
    assert all(0 <= pause < 10 for pause, _ in recorded.points)
    gc.collect()
    assert len(recorded.points) == len(generations)  # removed: nothing more recorded


def test_the_startup_heap_is_frozen_and_still_freed_by_reference_counting() -> None:
    class Built:
        pass

    kept = [Built() for _ in range(100)]
    dropped = Built()
    gone = weakref.ref(dropped)
    try:
        frozen = freeze_startup_heap()
        assert frozen >= 100
        walked = {id(o) for generation in (0, 1, 2) for o in gc.get_objects(generation)}
        assert not any(id(k) in walked for k in kept)  # no collection walks them now
        del dropped
        assert gone() is None  # freed all the same
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
