"""A seeded schedule of faults: what happens to which process, when, and for how long.

The schedule is a pure function of (seed, shape), so a failing run is re-run exactly. Faults
never overlap in time (each has the cluster to itself, then a recovery gap), which makes the
timeline readable and every lost or late checkout attributable to one fault.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal[
    "kill",  # SIGKILL a worker; restarted after `restart_after_s`
    "pause",  # SIGSTOP a worker past its session timeout, then SIGCONT (a zombie member)
    "db_outage",  # the database refuses connections (its proxy resets them)
    "broker_cut",  # the broker unreachable through its proxy (reset or black hole)
    "broker_restart",  # SIGKILL the broker, restart it on the same durable storage
]


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    at_s: float  # seconds after the carts start publishing
    duration_s: float  # how long the fault lasts (kill: until the restart)
    target: int = 0  # which worker (kill, pause)
    mode: str = ""  # broker_cut: reset | blackhole

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def what(self) -> str:
        return {
            "kill": f"SIGKILL worker {self.target}, restart after {self.duration_s:.1f} s",
            "pause": f"SIGSTOP worker {self.target} for {self.duration_s:.0f} s",
            "db_outage": f"database refuses connections for {self.duration_s:.0f} s",
            "broker_cut": f"broker cut ({self.mode}) for {self.duration_s:.0f} s",
            "broker_restart": f"broker SIGKILLed, back after {self.duration_s:.1f} s",
        }[self.kind]

    def describe(self) -> str:
        return f"t={self.at_s:6.1f} s  {self.what()}"


@dataclass(frozen=True)
class Shape:
    """How many faults of each kind, and the room they get."""

    kills: int = 3
    pauses: int = 1
    db_outages: int = 1
    broker_cuts: int = 1
    broker_restarts: int = 0
    workers: int = 2
    kill_restart_s: tuple[float, float] = (0.0, 5.0)
    pause_s: float = 12.0  # longer than the workers' session timeout
    db_outage_s: float = 30.0
    broker_cut_s: tuple[float, float] = (10.0, 30.0)
    broker_restart_s: tuple[float, float] = (1.0, 3.0)
    warmup_s: float = 8.0  # steady state before the first fault
    recovery_s: float = 10.0  # quiet time after each fault before the next


def plan(seed: int, shape: Shape) -> list[Fault]:
    """The faults in time order, spaced by `recovery_s`, their order shuffled by the seed."""
    rng = random.Random(seed)
    counts: dict[FaultKind, int] = {
        "kill": shape.kills,
        "pause": shape.pauses,
        "db_outage": shape.db_outages,
        "broker_cut": shape.broker_cuts,
        "broker_restart": shape.broker_restarts,
    }
    kinds = [kind for kind, n in counts.items() for _ in range(n)]
    rng.shuffle(kinds)
    faults: list[Fault] = []
    t = shape.warmup_s
    for kind in kinds:
        t += rng.uniform(0.0, 3.0)  # not on a beat
        fault = _fault(kind, t, shape, rng)
        faults.append(fault)
        t = fault.end_s + shape.recovery_s
    return faults


def _fault(kind: FaultKind, at_s: float, shape: Shape, rng: random.Random) -> Fault:
    if kind == "kill":
        return Fault(kind, at_s, rng.uniform(*shape.kill_restart_s), rng.randrange(shape.workers))
    if kind == "pause":
        return Fault(kind, at_s, shape.pause_s, rng.randrange(shape.workers))
    if kind == "db_outage":
        return Fault(kind, at_s, shape.db_outage_s)
    if kind == "broker_cut":
        mode = rng.choice(["reset", "blackhole"])
        return Fault(kind, at_s, rng.uniform(*shape.broker_cut_s), mode=mode)
    return Fault(kind, at_s, rng.uniform(*shape.broker_restart_s))


def span_s(faults: list[Fault], shape: Shape) -> float:
    """Seconds from the carts' start to the end of the last fault's recovery gap."""
    return (faults[-1].end_s if faults else shape.warmup_s) + shape.recovery_s
