"""The CI-sized smoke of `cartstream bench faust`: every kind of consumer reads the whole
topic on the real embedded broker, the worker's app with its own monitor and the contrast pass
with Faust's, and the report has a row for each."""

from __future__ import annotations

from pathlib import Path

from cartstream.services.tools import bench_faust as bf


def test_each_consumer_reads_every_record_and_is_reported(tmp_path: Path) -> None:
    passes = bf.run(1500, 1, tmp_path / "run", timeout_s=120)
    assert [p.kind for p in passes] == list(bf.KINDS)
    assert all(p.records >= 1500 and p.cpu_s > 0 for p in passes), passes
    monitors = {p.kind: p.monitor for p in passes}
    assert monitors == {"aiokafka": "", "faust-monitor": "Monitor", "worker": "LeanMonitor"}
    out = tmp_path / "benchmarks.md"
    bf.write_report(out, passes, "cartstream bench faust --records 1500 --repeats 1")
    text = out.read_text()
    for label in bf.LABELS.values():
        assert f"| {label} | 1 |" in text
    assert "<!-- bench:faust:begin -->" in text
