"""The chaos report's line on the broker's CPU: the first and the last minute of samples."""

from __future__ import annotations

from cartstream.services.tools.chaos.report import _broker_cpu_lines
from cartstream.services.tools.chaos.verify import Sample


def test_the_first_and_the_busiest_minute_of_the_brokers_cpu_are_reported() -> None:
    samples = [
        Sample(t_s=float(t), lag=0, committed=0, persisted=0, broker_cpu=cpu)
        for t, cpu in [(0, None), (1, 0.2), (30, 0.4), (100, 0.7), (130, 0.9), (200, 0.1)]
    ]
    # minutes from the first known sample (t = 1): [0.2, 0.4], [0.7], [0.9], [0.1]
    line = _broker_cpu_lines(samples)[0]
    assert "0.30 cores in the chaos run's first, 0.90 in its busiest (from t = 121 s)" in line


def test_a_run_sampled_without_the_brokers_cpu_says_nothing() -> None:
    assert _broker_cpu_lines([Sample(t_s=1.0, lag=0, committed=0, persisted=0)]) == []
