"""Faust's read offsets, made to honour a seek back.

Faust remembers per partition the last offset it handed to the streams (its *read offset*) and
drops any fetched record below it as already handed over. A seek back (`in_order.seek`) lowers
the read offset to just before the target, but under load Faust is still iterating a batch it
fetched before the seek, from the old position: those records raise the read offset again, and
the re-fetched records that follow, lower, are then dropped as old. The chaos suite showed the
effect as partitions that gained one record per seek, seeking every few seconds for minutes.

`ReadOffsets` replaces the mapping (`install`): a seek sets a *floor* for the partition, and
while it stands Faust reads the floor as the read offset, so the re-fetched records pass (the
stale ones pass too; `InOrder` drops them as out of order). The floor goes once the sought
record itself is handed over, or with a new assignment.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

log = logging.getLogger(__name__)

_PATCHED = "_cartstream_read_offsets"


class ReadOffsets(defaultdict[Any, int | None]):
    def __init__(self) -> None:
        super().__init__(lambda: None)
        self.floors: dict[Any, int] = {}

    def seek(self, tp: Any, offset: int) -> None:
        """The next record handed over for `tp` must be `offset` (then any after it)."""
        floor = offset - 1
        self.floors[tp] = floor
        super().__setitem__(tp, floor if floor >= 0 else None)

    def __getitem__(self, tp: Any) -> int | None:
        floor = self.floors.get(tp)
        if floor is not None:
            return floor if floor >= 0 else None
        return super().__getitem__(tp)

    def __setitem__(self, tp: Any, value: int | None) -> None:
        super().__setitem__(tp, value)
        floor = self.floors.get(tp)
        if floor is not None and value == floor + 1:
            del self.floors[tp]  # the sought record is handed over: normal order again

    def update(self, *args: Any, **kwargs: Any) -> None:
        """A new assignment's positions (Faust's `perform_seek`): no floor survives it."""
        for tp, value in dict(*args, **kwargs).items():
            self.floors.pop(tp, None)
            super().__setitem__(tp, value)

    def pop(self, tp: Any, *default: Any) -> Any:
        self.floors.pop(tp, None)
        return super().pop(tp, *default)

    def clear(self) -> None:
        self.floors.clear()
        super().clear()

    def in_refetch(self, tp: Any) -> bool:
        return tp in self.floors


def install() -> None:
    """Every Faust consumer made from now on keeps its read offsets in a `ReadOffsets`."""
    from faust.transport import consumer as module

    consumer_cls = module.Consumer
    original = consumer_cls.__init__
    if getattr(original, _PATCHED, False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._read_offset = ReadOffsets()

    setattr(__init__, _PATCHED, True)
    consumer_cls.__init__ = __init__  # type: ignore[method-assign]
