"""Dead letters are logged one by one up to a budget per stage and window; the rest are counted
and the count is logged once the window is over, so a flood of bad input cannot flood the log."""

from __future__ import annotations

import logging

import pytest

from cartstream.streams.deadletter import LetterLog
from cartstream.streams.stage import Inbound
from tests.fake_clock import Clock


def _inbound(offset: int) -> Inbound:
    return Inbound("cart.weights", 0, offset, None, 0)


def test_letters_past_the_budget_are_counted_and_summed_up_after_the_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(100.0)
    letters = LetterLog(per_window=3, window_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="cartstream.streams.deadletter"):
        for offset in range(50):
            letters.letter("reason", _inbound(offset), "DECODE: not Avro")
        letters.letter("detect", _inbound(7), "bad frame")  # another stage has its own budget
        clock.now += 10.0
        letters.letter("reason", _inbound(50), "DECODE: not Avro")
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if line.startswith("reason: dead-lettered")] == [
        "reason: dead-lettered cart.weights[0]@0: DECODE: not Avro",
        "reason: dead-lettered cart.weights[0]@1: DECODE: not Avro",
        "reason: dead-lettered cart.weights[0]@2: DECODE: not Avro (the stage's letters of the "
        "next 10 s are counted, not logged)",
        "reason: dead-lettered cart.weights[0]@50: DECODE: not Avro",
    ]
    assert "detect: dead-lettered cart.weights[0]@7: bad frame" in lines
    assert (
        "reason: 47 more dead letters in 10 s, not logged one by one (each is on the dead-letter "
        "topic)" in lines
    )
    assert len(lines) == 6


def test_a_quiet_stage_logs_every_letter(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(100.0)
    letters = LetterLog(per_window=3, window_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="cartstream.streams.deadletter"):
        for offset in range(6):
            letters.letter("persist", _inbound(offset), "VALIDATION: no such cart")
            clock.now += 5.0
    assert len(caplog.records) == 6
    assert not any("more dead letters" in r.getMessage() for r in caplog.records)
