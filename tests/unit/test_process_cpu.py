"""CpuMeter: cores used between readings, and no figure across a restart or a gone process."""

from __future__ import annotations

import pytest

from cartstream.services.tools import process_cpu
from cartstream.services.tools.process_cpu import CpuMeter


def test_shares_between_readings_and_none_across_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    used = {10: 5.0, 11: 0.3}
    monkeypatch.setattr(process_cpu, "process_cpu_s", lambda pid: used[pid])
    meter = CpuMeter()
    assert meter.share("broker", 10, now=100.0) is None  # the first reading
    used[10] = 6.5
    assert meter.share("broker", 10, now=102.0) == 0.75
    assert meter.share("broker", 11, now=103.0) is None  # another process: restarted
    used[11] = 0.2
    assert meter.share("broker", 11, now=104.0) is None  # less CPU time: not the same one
    meter.forget("broker")
    assert meter.share("broker", 11, now=105.0) is None
    used[11] = 0.7
    assert meter.share("broker", 11, now=106.0) == 0.5
