"""Start-up's heap is frozen out of the cyclic collector's sight."""

from __future__ import annotations

import gc
import weakref

from cartstream.core.gc_pauses import freeze_startup_heap


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
