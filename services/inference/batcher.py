"""Dynamic batching across requests: frames from concurrent requests are inferred together.

Each request's frames wait in a queue; one loop takes the first waiting request, gathers more
until `max_batch` frames or `max_wait_ms` after the first arrived, runs the whole batch once in
a worker thread and hands every request its own slice of the results. A request is never split
(one request larger than `max_batch` runs alone), so its frames keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

Result = TypeVar("Result")


@dataclass
class BatchStats:
    batches: int = 0
    frames: int = 0
    largest: int = 0
    sizes: list[int] = field(default_factory=list)  # the last 1 000 batches' frame counts

    def add(self, frames: int) -> None:
        self.batches += 1
        self.frames += frames
        self.largest = max(self.largest, frames)
        self.sizes = [*self.sizes[-999:], frames]


@dataclass
class _Waiting(Generic[Result]):
    images: np.ndarray
    done: asyncio.Future[tuple[list[Result], int]]


class DynamicBatcher(Generic[Result]):
    """`infer(images)` -> (one result per frame, the frames of the batch it ran in)."""

    def __init__(
        self,
        run: Callable[[np.ndarray], Sequence[Result]],
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.run, self.max_batch, self.max_wait_s = run, max_batch, max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Waiting[Result]] = asyncio.Queue()
        self._loop_task: asyncio.Task[None] | None = None

    async def infer(self, images: np.ndarray) -> tuple[list[Result], int]:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._loop(), name="dynamic-batcher")
        waiting = _Waiting[Result](images, asyncio.get_running_loop().create_future())
        await self._queue.put(waiting)
        return await waiting.done

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    async def _loop(self) -> None:
        held: _Waiting[Result] | None = None
        while True:
            first = held or await self._queue.get()
            held = None
            batch, frames = [first], len(first.images)
            deadline = time.monotonic() + self.max_wait_s
            while frames < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    more = (
                        self._queue.get_nowait()
                        if left <= 0
                        else await asyncio.wait_for(self._queue.get(), left)
                    )
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                if frames + len(more.images) > self.max_batch:
                    held = more  # first in the next batch: requests are never split
                    break
                batch.append(more)
                frames += len(more.images)
            await self._execute(batch, frames)

    async def _execute(self, batch: list[_Waiting[Result]], frames: int) -> None:
        images = batch[0].images if len(batch) == 1 else np.concatenate([w.images for w in batch])
        try:
            results = list(await asyncio.to_thread(self.run, images))
        except Exception as exc:  # every request of the batch gets the error
            for waiting in batch:
                if not waiting.done.done():
                    waiting.done.set_exception(exc)
            return
        self.stats.add(frames)
        start = 0
        for waiting in batch:
            end = start + len(waiting.images)
            if not waiting.done.done():  # its client may have gone
                waiting.done.set_result((results[start:end], frames))
            start = end
