"""Faust's read offsets with seek floors: records re-fetched after a seek back are handed over
even when a batch fetched before the seek raised the read offset meanwhile."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import MutableMapping
from typing import Any

from faust.types import TP

from cartstream.streams.runtime.faust_compat.read_offsets import ReadOffsets

TP0 = TP("cart.sessions", 0)


def drain(offsets: MutableMapping[Any, Any], batch: range) -> list[int]:
    """Faust's fetch loop (consumer.py `_drain_messages`): a record below the read offset is
    dropped as handed over already; each one handed over becomes the read offset."""
    handed = []
    for offset in batch:
        read = offsets[TP0]
        if read is None or offset >= read:
            handed.append(offset)
            offsets[TP0] = offset
    return handed


def seek(offsets: MutableMapping[Any, Any], offset: int) -> None:
    if isinstance(offsets, ReadOffsets):
        offsets.seek(TP0, offset)
    else:
        offsets[TP0] = offset - 1


def test_records_fetched_again_after_a_seek_get_through_a_stale_batch() -> None:
    def run(offsets: MutableMapping[Any, Any]) -> list[int]:
        drain(offsets, range(90, 101))
        seek(offsets, 50)  # 50..89 never reached the agent: fetch them again
        drain(offsets, range(101, 111))  # a batch fetched before the seek, from the old position
        return drain(offsets, range(50, 60))  # the re-fetch

    assert run(defaultdict(lambda: None)) == []  # plain Faust: dropped as old, for ever
    fixed = ReadOffsets()
    assert run(fixed) == list(range(50, 60))
    assert not fixed.in_refetch(TP0) and fixed[TP0] == 59  # normal order again
    assert drain(fixed, range(55, 58)) == []  # and repeats are dropped as before


def test_a_new_assignment_ends_a_refetch() -> None:
    offsets = ReadOffsets()
    offsets.seek(TP0, 50)
    assert offsets.in_refetch(TP0) and offsets[TP0] == 49
    offsets.update({TP0: 70})  # Faust's perform_seek after a rebalance
    assert not offsets.in_refetch(TP0) and offsets[TP0] == 70
    offsets.seek(TP0, 0)
    assert offsets[TP0] is None  # from the start: everything is handed over
    offsets.pop(TP0, None)
    assert not offsets.in_refetch(TP0) and offsets[TP0] is None


def test_install_gives_every_faust_consumer_these_offsets() -> None:
    from faust.transport import consumer as module

    from cartstream.streams.runtime.faust_compat import faust_fixes

    faust_fixes.install()
    assert getattr(module.Consumer.__init__, "_cartstream_read_offsets", False)
