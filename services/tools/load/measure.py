"""What a bench run measures, from outside the worker: per-hop latencies from the records the
pipeline published and the rows it wrote, and once a second the consumer lag and the CPU and
memory of the worker, the broker and the generator."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cartstream.core.settings import Settings
from cartstream.schemas.records import STEP_ACTIONS
from cartstream.services.kafka.lag import LagProbe
from cartstream.services.kafka.tail import read_topic
from cartstream.services.storage.repository import Repository
from cartstream.services.tools.process_cpu import CpuMeter

HOPS = ("produce→detection", "last packet→basket change", "checkout request→row")


@dataclass(frozen=True)
class Spread:
    n: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if not values:
            return cls(0, None, None, None, None)
        a = np.asarray(values, dtype=np.float64)
        p50, p95, p99 = (round(float(np.percentile(a, q)), 1) for q in (50, 95, 99))
        return cls(len(values), p50, p95, p99, round(float(a.max()), 1))


def hop_latencies(
    settings: Settings, database_url: str, since_ms: int, detects: bool
) -> dict[str, Spread]:
    """Milliseconds per hop, for records produced from `since_ms` on:
    - produce→detection: a frame's capture (= its send) to the detection's Kafka timestamp;
    - last packet→basket change: the weight packet that completed a step to the change;
    - checkout request→row: the request's time to the row's `persisted_at` (database clock).
    `detects`: the worker detects (else the detections were replayed: that hop is not measured).
    """
    topics = settings.topics
    detections = (
        []
        if not detects
        else [
            float(msg.timestamp - r["capture_time_ms"])
            for r, msg in read_topic(settings, topics.detections, idle_timeout_s=2.0)
            if r["capture_time_ms"] >= since_ms and msg.timestamp >= r["capture_time_ms"] - 60_000
        ]
    )
    changes = [
        float(r["published_ms"] - r["source_produced_ms"])
        for r, _ in read_topic(settings, topics.basket_changes, idle_timeout_s=2.0)
        if r["action"] in STEP_ACTIONS and r["source_produced_ms"] >= since_ms
    ]
    repo = Repository.from_url(database_url)
    try:
        rows = repo.checkout_times()
    finally:
        repo.close()
    checkouts = [
        (p.timestamp() - r.timestamp()) * 1000.0
        for r, p in rows
        if r.timestamp() * 1000.0 >= since_ms
    ]
    return {
        HOPS[0]: Spread.of(detections),
        HOPS[1]: Spread.of(changes),
        HOPS[2]: Spread.of(checkouts),
    }


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


@dataclass
class Tick:
    t_s: float
    lag: int | None
    cpu: dict[str, float]  # share of one core since the last tick, per process
    rss_mb: dict[str, float]


@dataclass
class Sampler:
    """Once a second: consumer lag of the worker's group and each process's CPU and RSS."""

    settings: Settings
    groups: Mapping[str, list[str]]
    pids: Callable[[], dict[str, int]]  # name -> pid (the generator's appears once started)
    ticks: list[Tick] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="bench-sampler", daemon=True)
        self._probe = LagProbe(self.settings, self.groups)
        self.started = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._probe.close()

    def _main(self) -> None:
        meter = CpuMeter()
        while not self._stop.is_set():
            now = time.monotonic()
            sample = self._probe.sample()
            cpu, rss = {}, {}
            for name, pid in self.pids().items():
                share = meter.share(name, pid, now)
                if share is not None:
                    cpu[name] = share
                rss[name] = round(_rss_mb(pid), 1)
            lag = sample[0] if sample is not None else None
            self.ticks.append(Tick(round(now - self.started, 1), lag, cpu, rss))
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - now)))

    def mean_cpu(self, name: str, from_s: float, to_s: float) -> float:
        shares = [t.cpu[name] for t in self.ticks if from_s <= t.t_s <= to_s and name in t.cpu]
        return round(sum(shares) / len(shares), 2) if shares else 0.0

    def max_rss(self, name: str) -> float:
        return max((t.rss_mb.get(name, 0.0) for t in self.ticks), default=0.0)
