"""Deadlines wait for a stage's backlog (streams/backlog.py): which input partitions hold
records the stage has not processed."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from cartstream.streams.backlog import Backlog, behind, tick_ends, tick_sent_ms, tick_value


def test_a_partition_whose_log_ends_past_the_stage_position_is_behind() -> None:
    assert behind({"weights": 10, "sessions": 5}, {"weights": 12, "sessions": 5}) == ["weights"]
    assert behind({"weights": 12, "sessions": 5}, {"weights": 12, "sessions": 5}) == []


def test_an_unread_partition_holding_records_is_behind_an_empty_one_is_not() -> None:
    assert behind({"weights": None}, {"weights": 3}) == ["weights"]
    assert behind({"weights": None}, {"weights": 0}) == []


def test_an_unknown_watermark_is_behind_never_caught_up() -> None:
    """Issue 38: an end not fetched (or of a partition not assigned) once counted as nothing
    to wait for, and deadlines fired early."""
    assert behind({"weights": None}, {"weights": None}) == ["weights"]
    assert behind({"weights": 12}, {"weights": None}) == ["weights"]


class FakeConsumer:
    def __init__(self, ends: dict[TP, int], committed: dict[TP, int]) -> None:
        self.ends = ends
        self._committed_offset = committed

    def assignment(self) -> set[TP]:
        return set(self.ends)

    def highwater(self, tp: TP) -> int:
        if tp not in self.ends:
            raise KeyError(tp)  # aiokafka: not assigned to this consumer
        return self.ends[tp]


def test_positions_are_the_stages_own_then_the_groups_commits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ends = {TP("w", 3): 20, TP("s", 3): 4, TP("w", 4): 9}
    committed = {TP("w", 3): 15, TP("s", 3): 4, TP("w", 4): 9}
    expected: dict[Any, int] = {}
    app = SimpleNamespace(consumer=FakeConsumer(ends, committed))
    backlog = Backlog(app, "reason", ["w", "s"], expected)
    with caplog.at_level(logging.INFO):
        assert backlog.caught_up(3) is None  # committed 15, the log ends at 20: not read yet
        expected[TP("w", 3)] = 19
        assert backlog.caught_up(3) is None
        expected[TP("w", 3)] = 20
        assert backlog.caught_up(3) == {"s": 4, "w": 20}
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "reason: deadlines of partition 3 wait for records not processed yet: w[3] at 15 of 20",
        "reason: partition 3 caught up; its deadlines fire again",
    ]
    assert backlog.caught_up(4) is None  # `s` is not assigned here: not this worker's


def test_no_deadline_fires_for_a_partition_this_worker_no_longer_owns() -> None:
    """Issue 38, window 4: after a rebalance took partition 3, the worker still held its keys;
    their ends were unknown and the old rule read that as caught up."""
    ends = {TP("w", 3): 20, TP("s", 3): 4}
    app = SimpleNamespace(consumer=FakeConsumer(ends, dict(ends)))
    backlog = Backlog(app, "reason", ["w", "s"], {TP("w", 3): 20, TP("s", 3): 4})
    assert backlog.caught_up(3) == {"s": 4, "w": 20}
    app.consumer = FakeConsumer({}, {})  # revoked: nothing assigned, no watermark
    assert not backlog.owns(3)
    assert backlog.caught_up(3) is None


def test_a_tick_sent_further_on_than_the_stage_stands_is_short_after_a_restart() -> None:
    """A tick carries the ends its sender had processed; a restarted worker that has not read
    that far yet holds it (its committed offset is behind them)."""
    sent = tick_ends(tick_value({"w": 20, "s": 4}, 1_000))
    assert sent == {"s": 4, "w": 20} and tick_sent_ms(tick_value({"w": 1}, 1_000)) == 1_000
    committed = {TP("w", 3): 12, TP("s", 3): 4}
    expected: dict[Any, int] = {}
    backlog = Backlog(
        SimpleNamespace(consumer=FakeConsumer({}, committed)), "r", ["w", "s"], expected
    )
    assert backlog.short_of(3, sent) == ["w"]
    expected[TP("w", 3)] = 20
    assert backlog.short_of(3, sent) == []
    assert tick_ends(b"tick") is None  # a tick from before ticks carried their ends
    assert tick_sent_ms(tick_value({"w": 1}, 5)) == 5 and tick_sent_ms(b'{"ends": {}}') is None


def test_deadlines_wait_for_the_upstream_stage_to_process_its_partition() -> None:
    """Issue 38, point 6: reason's own inputs are all read, but detect has not processed the
    partition's frames: no deadline fires until it has (a fault delays, never changes)."""
    from cartstream.streams.upstream import LocalProgress, register

    ends = {TP("w", 3): 20, TP("s", 3): 4, TP("frames", 3): 50}
    app = SimpleNamespace(consumer=FakeConsumer(ends, {TP("frames", 3): 10}))
    detect = SimpleNamespace(expected={})  # restarted: nothing processed since its commit
    register(app, "detect", detect)
    upstream = {"frames@detect": LocalProgress(app, "frames", detect)}
    backlog = Backlog(app, "reason", ["w", "s"], {TP("w", 3): 20, TP("s", 3): 4}, upstream)
    assert backlog.caught_up(3) is None  # detect committed 10 of 50
    detect.expected[TP("frames", 3)] = 49
    assert backlog.caught_up(3) is None
    detect.expected[TP("frames", 3)] = 50
    assert backlog.caught_up(3) == {"frames@detect": 50, "s": 4, "w": 20}
    # a tick sent then is acted on by a worker only once its detect is as far on
    detect.expected[TP("frames", 3)] = 12
    assert backlog.short_of(3, {"frames@detect": 50, "s": 4, "w": 20}) == ["frames@detect"]


def test_an_upstream_stage_in_another_group_is_asked_of_the_broker() -> None:
    import asyncio

    from cartstream.core.settings import Settings
    from cartstream.streams.upstream import UpstreamProgress, register

    app, now = SimpleNamespace(), [100.0]
    progress = UpstreamProgress(app, Settings(), "frames", "detect", "cartstream-detect")
    progress.remote.clock = lambda: now[0]
    answers = [({3: 40}, {3: 50}), ({3: 50}, {3: 50})]
    progress.remote._ask = lambda: answers.pop(0)  # type: ignore[method-assign]
    asyncio.run(progress.refresh())  # no deadline asked: nothing asked of the broker
    assert len(answers) == 2
    assert (progress.position(3), progress.end(3)) == (None, None)  # unknown: behind
    asyncio.run(progress.refresh())
    assert (progress.position(3), progress.end(3)) == (40, 50)
    asyncio.run(progress.refresh())  # asked at most once a second
    assert progress.position(3) == 40
    now[0] += 2
    asyncio.run(progress.refresh())
    assert progress.position(3) == 50
    now[0] += 10  # no deadline asked for a while: the last answer is stale, so behind
    assert (progress.position(3), progress.end(3)) == (None, None)

    def refused() -> Any:
        raise ConnectionError("broker gone")

    progress.remote._ask = refused  # type: ignore[method-assign]
    asyncio.run(progress.refresh())  # never raises; what was known stays stale: behind
    assert progress.position(3) is None and progress.remote.failed == 1
    register(app, "detect", SimpleNamespace(expected={TP("frames", 3): 7}))
    app.consumer = FakeConsumer({TP("frames", 3): 9}, {})
    assert (progress.position(3), progress.end(3)) == (7, 9)  # detect runs here after all
