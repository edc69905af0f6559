"""The end-offset correction's arithmetic, on a fake aiokafka client, and the fetch limits on
Faust's consumer (no I/O)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as driver

from cartstream.streams.runtime.faust_compat.broker_workarounds import (
    fetch_limits,
    fetched_high_watermarks,
)


class FakeClient:
    """Leader 1 for every partition; answers fetches with the given (error, highwater)."""

    def __init__(self, answers: dict[tuple[str, int], tuple[int, int]], fail: bool = False):
        self.answers = answers
        self.fail = fail
        self.requests: list[Any] = []
        self.cluster = self

    def leader_for_partition(self, tp: tuple[str, int]) -> int:
        return 1

    async def send(self, node: int, request: Any) -> Any:
        self.requests.append(request)
        if self.fail:
            raise ConnectionError("broker gone")
        topics: dict[str, list[tuple[int, int, int]]] = {}
        for (topic, partition), (error, high) in self.answers.items():
            topics.setdefault(topic, []).append((partition, error, high))
        return type("Response", (), {"topics": list(topics.items())})()


def run(client: FakeClient, listed: dict[Any, int | None]) -> dict[Any, int | None]:
    return asyncio.run(fetched_high_watermarks(client, listed))


def test_a_low_listed_offset_is_raised_and_a_higher_one_kept() -> None:
    client = FakeClient({("t", 0): (0, 70), ("t", 1): (0, 3), ("t", 2): (0, 0)})
    got = run(client, {("t", 0): 36, ("t", 1): 5, ("t", 2): None})
    assert got == {("t", 0): 70, ("t", 1): 5, ("t", 2): None}
    (request,) = client.requests  # one request for the leader, fetching at the listed offsets
    assert request.topics == [("t", [(0, 36, 1), (1, 5, 1), (2, 0, 1)])]


def test_an_error_or_a_failed_fetch_keeps_the_listed_offset() -> None:
    errored = FakeClient({("t", 0): (1, 99), ("t", 1): (0, 9)})
    assert run(errored, {("t", 0): 4, ("t", 1): 2}) == {("t", 0): 4, ("t", 1): 9}
    failed = FakeClient({}, fail=True)
    assert run(failed, {("t", 0): 4}) == {("t", 0): 4}


def test_fetch_limits_reach_the_consumer_faust_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    built = type("Consumer", (), {"_fetch_max_wait_ms": 1500, "_fetch_min_bytes": 1})
    thread = driver.AIOKafkaConsumerThread
    monkeypatch.setattr(thread, "_create_worker_consumer", lambda self, transport: built())
    fetch_limits(20, 16384)
    consumer = thread._create_worker_consumer(None, None)  # type: ignore[arg-type]
    assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (20, 16384)
    fetch_limits(None, 4096)  # another profile in the same process replaces the first
    consumer = thread._create_worker_consumer(None, None)  # type: ignore[arg-type]
    assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (1500, 4096)
