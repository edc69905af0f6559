"""The CI-sized smoke of `cartstream bench broker`: two sizes of log on the real embedded
broker, each measured, and the report says what was held and what each request cost."""

from __future__ import annotations

from pathlib import Path

from cartstream.services.tools import bench_broker as bb


def test_each_size_is_filled_measured_and_reported(tmp_path: Path) -> None:
    steps = bb.run([0, 800], 0.3, tmp_path / "run")
    assert len(steps) == 2
    assert steps[1].batches >= 800 + bb.PARTITIONS  # the fill, then the fetch step's records
    assert all(s.produce_us >= 0 and s.fetch_new_ms >= 0 for s in steps), steps
    out = tmp_path / "broker-cost.md"
    bb.write_report(out, steps, "cartstream bench broker --sizes 0,800 --seconds 0.3")
    text = out.read_text()
    assert f"| {steps[1].batches:,} |" in text
    assert "Broker CPU per batch held" in text
