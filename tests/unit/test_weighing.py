from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from cartstream.core.settings import ReasonSettings
from cartstream.models.weighing import (
    SettleDetector,
    SettleParams,
    SettleState,
    Step,
    window_stats,
)

RATE = 50.0


STORED = TypeAdapter(SettleState)  # how a stage's state codec stores it


def signal(levels: list[tuple[float, float]], noise: float = 1.5, seed: int = 0) -> np.ndarray:
    """Piecewise-constant levels [(seconds, grams)] with noise."""
    rng = np.random.default_rng(seed)
    parts = [np.full(int(s * RATE), g) for s, g in levels]
    x = np.concatenate(parts)
    return x + rng.normal(0, noise, x.size)


def run(x: np.ndarray, packet: int = 10) -> list[Step]:
    det, state, steps = SettleDetector(SettleParams.of(ReasonSettings())), SettleState(), []
    for i in range(0, x.size, packet):
        steps += det.feed(state, x[i : i + packet], int(i * 20), RATE)
        state = STORED.validate_python(STORED.dump_python(state, mode="json"))  # as in a table
    return steps


def test_one_add_one_remove() -> None:
    steps = run(signal([(2, 0), (3, 512), (3, 162)]))
    assert [round(s.delta_g) for s in steps] == [512, -350]
    assert all(s.sigma_g < 3 for s in steps)
    assert steps[0].end_ms - steps[0].start_ms < 1000


def test_drift_is_not_a_step() -> None:
    x = signal([(60, 800)]) + np.linspace(0, 10, int(60 * RATE))  # 10 g/min drift
    assert run(x) == []


def test_bump_returns_to_level_and_is_not_a_step() -> None:
    x = signal([(6, 300)])
    t = np.arange(50) / RATE
    x[100:150] += 35 * np.sin(2 * np.pi * 4 * t)  # one second of shaking
    assert run(x) == []


def test_small_wobble_below_min_step_is_dropped() -> None:
    assert run(signal([(2, 100), (2, 106), (2, 100)])) == []


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60))
def test_packet_size_does_not_change_the_steps(packet: int) -> None:
    x = signal([(2, 0), (2, 350), (2, 700), (2, 350)], seed=3)
    reference = [(round(s.delta_g, 6), s.end_ms) for s in run(x, 10)]
    assert [(round(s.delta_g, 6), s.end_ms) for s in run(x, packet)] == reference


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(-500, 30_000, allow_nan=False, width=64), min_size=0, max_size=60),
    st.integers(3, 25),
)
def test_window_stats_are_numpys_to_the_last_bit(samples: list[float], w: int) -> None:
    """The settle detector's rolling statistics give exactly what numpy's mean and std of the
    sliding windows give, so a step's level and delta never move by a rounding."""
    buf = np.asarray(samples, dtype=np.float64)
    means, stds = window_stats(buf, w)
    if buf.size < w:
        assert means == [] and stds == []
        return
    views = np.lib.stride_tricks.sliding_window_view(buf, w)
    assert means == views.mean(axis=1).tolist()
    assert stds == views.std(axis=1).tolist()
