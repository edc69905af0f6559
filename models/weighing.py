"""Settle detection and step extraction on a stream of load-cell samples.

The detector is a two-state machine, SETTLED and MOVING, over a short sliding window:
- SETTLED: the level follows the window mean slowly (so zero drift never becomes a step); a
  sample further than `unsettle_g` from the level starts a movement.
- MOVING: when the window is still again (std below `settle_max_std_g`), the new level minus the
  level before the movement is a step if it is at least `min_step_g`; otherwise the movement was
  a bump or vibration and is dropped.
Its state is a small JSON-able dict, so a stream processor can keep it in a changelogged table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cartstream.core.settings import ReasonSettings


@dataclass(frozen=True)
class SettleParams:
    """The settle detector's tuning. The three a deployment tunes come from `ReasonSettings`
    (their one home, with their defaults); the rest are fixed properties of the algorithm."""

    window_s: float
    settle_max_std_g: float
    min_step_g: float
    unsettle_g: float = 8.0
    drift_follow: float = 0.05  # fraction of the window mean folded into the level per sample

    @classmethod
    def of(cls, reason: ReasonSettings) -> SettleParams:
        return cls(
            window_s=reason.settle_window_s,
            settle_max_std_g=reason.settle_max_std_g,
            min_step_g=reason.min_step_g,
        )


@dataclass(frozen=True)
class Step:
    """A settled change of the scale's level."""

    delta_g: float
    sigma_g: float
    start_ms: int
    end_ms: int
    level_before_g: float
    level_after_g: float


@dataclass
class SettleState:
    window: list[float] = field(default_factory=list)
    settled: bool = False
    level: float = 0.0
    level_std: float = 1.5
    level_before: float = 0.0
    level_before_std: float = 1.5
    moving_since_ms: int = 0
    initialised: bool = False


def window_stats(buf: np.ndarray, w: int) -> tuple[list[float], list[float]]:
    """The mean and (population) standard deviation of every window of `w` consecutive samples
    of `buf` (a contiguous float64 array), in order; empty lists while `buf` is shorter.

    The same numbers, to the last bit, as `mean(axis=1)` and `std(axis=1)` of numpy's
    `sliding_window_view(buf, w)`: the same view, reduced by the same ufuncs in the order
    numpy's `_mean` and `_var` use, without their per-call checks (a weight packet holds a
    few samples, so those checks were most of the cost)."""
    rows = buf.size - w + 1
    if rows <= 0:
        return [], []
    step = buf.strides[0]
    views = np.ndarray((rows, w), dtype=np.float64, buffer=buf, strides=(step, step))
    means = np.add.reduce(views, axis=1, keepdims=True)
    np.true_divide(means, w, out=means)
    dev = views - means
    np.multiply(dev, dev, out=dev)
    var = np.add.reduce(dev, axis=1)
    np.true_divide(var, w, out=var)
    np.sqrt(var, out=var)
    return means[:, 0].tolist(), var.tolist()


class SettleDetector:
    def __init__(self, params: SettleParams) -> None:
        self.params = params

    def window_len(self, rate_hz: float) -> int:
        return max(3, round(self.params.window_s * rate_hz))

    def feed(
        self, state: SettleState, samples: np.ndarray, start_ms: int, rate_hz: float
    ) -> list[Step]:
        """Advance `state` over one packet; return the steps that settled inside it."""
        p = self.params
        w = self.window_len(rate_hz)
        values = np.asarray(samples, dtype=np.float64)
        buf = np.concatenate([np.asarray(state.window, dtype=np.float64), values])
        # rolling mean/std of the window ending at each new sample (none until the window fills)
        means_full, stds_full = window_stats(buf, w)
        offset = buf.size - values.size  # index in buf of the first new sample
        steps: list[Step] = []
        period_ms = 1000.0 / rate_hz
        for i, x in enumerate(values.tolist()):
            k = offset + i - (w - 1)  # row of the window ending at this sample
            if k < 0:
                continue
            mean, std = means_full[k], stds_full[k]
            now_ms = start_ms + round(i * period_ms)
            if not state.initialised:
                if std < p.settle_max_std_g:
                    state.initialised, state.settled = True, True
                    state.level, state.level_std = mean, max(std, 0.5)
                continue
            if state.settled:
                if abs(x - state.level) > p.unsettle_g:
                    state.settled = False
                    state.level_before, state.level_before_std = state.level, state.level_std
                    state.moving_since_ms = now_ms
                elif std < p.settle_max_std_g:
                    state.level += p.drift_follow * (mean - state.level)
                    state.level_std = max(0.5, 0.9 * state.level_std + 0.1 * std)
            elif std < p.settle_max_std_g:
                delta = mean - state.level_before
                state.settled, state.level, state.level_std = True, mean, max(std, 0.5)
                if abs(delta) >= p.min_step_g:
                    sigma = math.sqrt((state.level_before_std**2 + std**2) / w) + 0.5
                    steps.append(
                        Step(delta, sigma, state.moving_since_ms, now_ms, state.level_before, mean)
                    )
        state.window = buf[-(w - 1) :].tolist() if w > 1 else []
        return steps

    @staticmethod
    def current_level(state: SettleState) -> float:
        """The best reading of the net weight now (the settled level, or the window mean)."""
        if state.settled or not state.window:
            return state.level
        return float(np.mean(state.window))
