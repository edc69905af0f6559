"""Dynamic batching across requests (services/inference/batcher.py) and the remote detector's
reading of answers (models/remote.py), without a server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from cartstream.exceptions import ConfigurationError
from cartstream.models.remote import RemoteDetector
from cartstream.services.inference.batcher import DynamicBatcher


def frames(first: int, n: int) -> np.ndarray:
    return np.arange(first, first + n, dtype=np.int64)  # one number per "frame"


def test_requests_share_batches_in_order_and_are_never_split() -> None:
    runs: list[list[int]] = []

    def run(images: np.ndarray) -> list[int]:
        runs.append(images.tolist())
        return [int(x) * 10 for x in images]

    async def scenario() -> list[tuple[list[int], int]]:
        batcher = DynamicBatcher(run, max_batch=5, max_wait_ms=50)
        answers = await asyncio.gather(
            batcher.infer(frames(0, 2)),
            batcher.infer(frames(2, 2)),
            batcher.infer(frames(4, 3)),  # would make 7 > 5: waits for the next batch
            batcher.infer(frames(7, 9)),  # larger than a batch: runs alone, whole
        )
        await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    assert runs == [[0, 1, 2, 3], [4, 5, 6], list(range(7, 16))]
    assert answers == [
        ([0, 10], 4),
        ([20, 30], 4),
        ([40, 50, 60], 3),
        ([x * 10 for x in range(7, 16)], 9),
    ]


def test_a_failed_batch_fails_each_of_its_requests_and_the_next_one_runs() -> None:
    calls = 0

    def run(images: np.ndarray) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("inference failed")
        return [0] * len(images)

    async def scenario() -> list[object]:
        batcher = DynamicBatcher(run, max_batch=8, max_wait_ms=20)
        first = await asyncio.gather(
            batcher.infer(frames(0, 1)), batcher.infer(frames(1, 1)), return_exceptions=True
        )
        second = await batcher.infer(frames(2, 1))
        await batcher.close()
        return [*first, second]

    a, b, c = asyncio.run(scenario())
    assert isinstance(a, RuntimeError) and isinstance(b, RuntimeError)
    assert c == ([0], 1)


def test_the_remote_detector_maps_skus_onto_its_catalog() -> None:
    remote = RemoteDetector("grpc://inference:8081", ["milk-1l", "eggs-6"], threshold=0.3)
    counts = np.array([2, 0], np.int32)
    names = np.array([[b"eggs-6", b"milk-1l", b""], [b"", b"", b""]], dtype=object)
    scores = np.array([[0.9, 0.2, 0], [0, 0, 0]], np.float32)
    boxes = np.zeros((2, 3, 4), np.float32)
    first, second = remote._frames(counts, names, scores, boxes, 0.3)
    assert first.classes.tolist() == [1] and first.scores.tolist() == pytest.approx([0.9])
    assert second.classes.size == 0
    names[0, 0] = b"caviar"
    with pytest.raises(ConfigurationError, match="another catalog"):
        remote._frames(counts, names, scores, boxes, 0.1)
    for endpoint in ("inference:8081", "https://inference", "grpc://"):
        with pytest.raises(ConfigurationError, match="expected grpc://host:port"):
            RemoteDetector(endpoint, ["milk-1l"])
