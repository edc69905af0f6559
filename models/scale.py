"""A load-cell signal as a cart's basket scale produces it for a planned session."""

from __future__ import annotations

import numpy as np

from cartstream.models.shopper import SessionPlan

DEFAULT_RATE_HZ = 50.0
DEFAULT_NOISE_G = 1.5


def synthesize_weights(
    plan: SessionPlan,
    rng: np.random.Generator,
    rate_hz: float = DEFAULT_RATE_HZ,
    noise_g: float = DEFAULT_NOISE_G,
) -> np.ndarray:
    """Net grams at `rate_hz` for the whole session (float32, tare = 0 at the start).

    Each placement: the hand presses and wobbles while it lets go, then the basket rings down
    (damped ~4 Hz) onto the new level within the action's settle time. Bumps shake the scale
    without changing the level. The zero drifts slowly; the cell adds white noise.
    """
    n = max(1, int(np.ceil(plan.duration_s * rate_hz)))
    t = np.arange(n, dtype=np.float64) / rate_hz
    signal = np.zeros(n, dtype=np.float64)
    level = 0.0
    for a in plan.actions:
        delta = a.grams if a.action == "ADD" else -a.grams
        start = int(a.at_s * rate_hz)
        end = min(n, int((a.at_s + a.settle_s) * rate_hz))
        signal[start:] += delta
        if end <= start:
            continue
        local = t[start:end] - a.at_s
        frac = local / a.settle_s
        # hand on the item: partial load plus press, fading as the hand leaves
        hand = (1.0 - np.clip(frac / 0.4, 0.0, 1.0)) * (
            -delta * 0.6 + rng.normal(0.0, 6.0) + 10.0 * np.sin(2 * np.pi * 2.5 * local)
        )
        ring_amp = 0.15 * abs(delta) + 8.0
        ring = ring_amp * np.exp(-local / (a.settle_s / 6.0)) * np.sin(2 * np.pi * 4.0 * local)
        signal[start:end] += hand + ring
        level += delta
    for b in plan.bumps:
        start = int(b.at_s * rate_hz)
        end = min(n, int((b.at_s + b.duration_s) * rate_hz))
        if end <= start:
            continue
        local = t[start:end] - b.at_s
        envelope = np.sin(np.pi * local / b.duration_s)
        freq = float(rng.uniform(3.0, 6.0))
        signal[start:end] += b.amplitude_g * envelope * np.sin(2 * np.pi * freq * local)
    for tamper in plan.tampers:  # weight that is no item: a lean, or a slow creep
        up = np.clip((t - tamper.at_s) / tamper.ramp_s, 0.0, 1.0)
        if tamper.returns:
            back_at = tamper.at_s + tamper.ramp_s + tamper.hold_s
            up = up * (1.0 - np.clip((t - back_at) / tamper.ramp_s, 0.0, 1.0))
        signal += tamper.grams * up
    signal += plan.drift_g_per_min * t / 60.0
    signal += rng.normal(0.0, noise_g, size=n)
    return np.round(signal, 1).astype(np.float32)
