"""Vision drift per SKU: does the camera still confirm what the scale says moved?

A SKU whose packaging changed completely is not seen at all (the simulator's repackaged milk:
found in 0 of 60 frames), so the frame features of `drift.py` cannot show it: no box of it
carries a low score, there is no box. Fusion can: every basket change carries `weight_sku`
(what the weight alone says moved) and `vision_sku` (what the cameras alone say, null when
nothing was seen in hand). When the weight names a SKU and the cameras had usable frames, the
change is one trial: *confirmed* when vision names the same SKU, *unconfirmed* otherwise.

Per SKU the monitor keeps the last `window` trials. For the last `n` of them, `k` unconfirmed,
and the SKU's honest unconfirmed rate `p` from the reference, the surprise is

    -log10 P(X >= k),  X ~ Binomial(n, p)

taken at the `n` (from `min_samples` to the whole window) where it is largest: the trials since
a change are what count, and older, honest ones would only dilute them. The SKU drifts when the
surprise reaches `alert_surprise` (5). A test on counts, not PSI: a SKU sees a few changes an
hour, far too few for binned proportions.

The honest rates come from the same honest simulated shopping as the frame reference
(`cartstream models drift-reference`). A SKU's rate is shrunk towards the rate over all SKUs by
`PRIOR_TRIALS` pseudo-trials, so a SKU seen a few times there is judged by the pool's rate; and
no rate is taken below `MIN_RATE`. Look-alikes (milk 1 L vs 2 L) honestly disagree more often,
which is why the rate is per SKU.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PRIOR_TRIALS = 20.0  # pseudo-trials at the pooled rate added to every SKU's reference counts
MIN_RATE = 0.02  # no honest unconfirmed rate is taken below this
TRIAL_ACTIONS = frozenset({"ADD", "REMOVE"})


def trial(change: Mapping[str, Any]) -> tuple[str, bool] | None:
    """(the SKU the weight names, whether vision confirmed it) for a basket change that is a
    trial; None when it is not one (a marker, no weight SKU, vision unused or blind)."""
    sku = change.get("weight_sku")
    if change.get("action") not in TRIAL_ACTIONS or not sku:
        return None
    if int(change.get("frames_seen", -1)) <= 0:  # vision not used, or no usable frame
        return None
    return str(sku), change.get("vision_sku") == sku


def binomial_surprise(n: int, k: int, p: float) -> float:
    """-log10 P(X >= k) for X ~ Binomial(n, p): 0 when k is unremarkable, large when rare."""
    if k <= 0:
        return 0.0
    tail = math.fsum(math.comb(n, i) * p**i * (1.0 - p) ** (n - i) for i in range(k, n + 1))
    return -math.log10(max(tail, 1e-300))


@dataclass(frozen=True)
class VisionReference:
    """Per SKU, [unconfirmed, trials] over honest shopping."""

    counts: dict[str, list[int]]

    @classmethod
    def from_changes(cls, changes: Iterable[Mapping[str, Any]]) -> VisionReference:
        counts: dict[str, list[int]] = {}
        for change in changes:
            seen = trial(change)
            if seen is not None:
                sku, confirmed = seen
                entry = counts.setdefault(sku, [0, 0])
                entry[0] += not confirmed
                entry[1] += 1
        return cls(dict(sorted(counts.items())))

    @property
    def pooled_rate(self) -> float:
        unconfirmed = sum(u for u, _ in self.counts.values())
        trials = sum(n for _, n in self.counts.values())
        return unconfirmed / trials if trials else 0.5

    def rate(self, sku: str) -> float:
        """The SKU's honest unconfirmed rate, shrunk towards the pooled rate."""
        unconfirmed, trials = self.counts.get(sku, (0, 0))
        pooled = self.pooled_rate
        rate = (unconfirmed + PRIOR_TRIALS * pooled) / (trials + PRIOR_TRIALS)
        return min(max(rate, MIN_RATE), 1.0 - 1e-9)


@dataclass(frozen=True)
class VisionReading:
    """A SKU's most surprising run of recent trials: the last `samples`, `unconfirmed` of them."""

    sku: str
    unconfirmed: int
    samples: int
    rate: float  # the reference's honest rate for the SKU
    surprise: float
    drifting: bool

    def attributes(self) -> dict[str, str]:
        return {"sku": self.sku}


@dataclass
class _Trials:
    size: int
    outcomes: deque[bool] = field(default_factory=deque)  # True: unconfirmed

    def add(self, unconfirmed: bool) -> None:
        self.outcomes.append(unconfirmed)
        if len(self.outcomes) > self.size:
            self.outcomes.popleft()


class VisionDriftMonitor:
    """The last `window` trials per SKU, read as binomial surprise against the reference."""

    def __init__(
        self,
        reference: VisionReference,
        window: int = 40,
        min_samples: int = 10,
        alert_surprise: float = 5.0,
    ) -> None:
        if min_samples > window:
            raise ValueError("min_samples cannot exceed the window")
        self.reference = reference
        self.window, self.min_samples, self.alert_surprise = window, min_samples, alert_surprise
        self._trials: dict[str, _Trials] = {}

    def observe(self, change: Mapping[str, Any]) -> str | None:
        """Counts the change if it is a trial; the SKU it counted for, else None."""
        seen = trial(change)
        if seen is None:
            return None
        sku, confirmed = seen
        trials = self._trials.get(sku)
        if trials is None:
            trials = self._trials[sku] = _Trials(self.window)
        trials.add(not confirmed)
        return sku

    def reading(self, sku: str) -> VisionReading | None:
        """The SKU's window read against its honest rate; None below `min_samples`."""
        trials = self._trials.get(sku)
        n = len(trials.outcomes) if trials is not None else 0
        if trials is None or n < self.min_samples:
            return None
        rate = self.reference.rate(sku)
        recent = list(trials.outcomes)[::-1]  # newest first
        best = (0.0, 0, 0)  # (surprise, unconfirmed, trials) of the most surprising suffix
        k = sum(recent[: self.min_samples - 1])
        for m in range(self.min_samples, n + 1):
            k += recent[m - 1]
            best = max(best, (binomial_surprise(m, k, rate), k, m))
        surprise, k, m = best
        return VisionReading(sku, k, m, rate, surprise, surprise >= self.alert_surprise)

    def readings(self) -> list[VisionReading]:
        """Every SKU with at least `min_samples` trials in its window."""
        return [r for sku in sorted(self._trials) if (r := self.reading(sku)) is not None]
