"""Where a coroutine waits: the chain of awaits from a task down to the future it sits on.

asyncio's own `Task.get_stack` stops at the task's top frame; an agent that hangs is somewhere
below it (its stream, a publish, a broker call). On-call logs this for an agent that stalls."""

from __future__ import annotations

import asyncio
from typing import Any

_MAX_DEPTH = 40


def await_chain(task: asyncio.Future[Any] | None) -> list[str]:
    """`file:line function` per awaiting frame, outermost first, then what the innermost
    awaits (a future, an async generator step); empty when there is no live task."""
    if task is None or task.done() or not isinstance(task, asyncio.Task):
        return []
    lines: list[str] = []
    obj: Any = task.get_coro()
    for _ in range(_MAX_DEPTH):
        if obj is None:
            break
        frame = (
            getattr(obj, "cr_frame", None)
            or getattr(obj, "gi_frame", None)
            or getattr(obj, "ag_frame", None)
        )
        if frame is not None:
            path = frame.f_code.co_filename.split("site-packages/")[-1]
            lines.append(f"{path}:{frame.f_lineno} {frame.f_code.co_name}")
        inner = (
            getattr(obj, "cr_await", None)
            or getattr(obj, "gi_yieldfrom", None)
            or getattr(obj, "ag_await", None)
        )
        if inner is None and frame is None:
            lines.append(f"<{type(obj).__name__}>")
        obj = inner
    return lines
