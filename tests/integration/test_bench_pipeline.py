"""The CI-sized smoke of `cartstream bench pipeline`: one point of a few carts on two workers in
one group, through the real broker and Postgres. The numbers come from the bench command; this
checks that a point measures what it says: the generator kept pace, every hop was timed, the
lag was read and drained, the workers' CPU was sampled, and the table says so."""

from __future__ import annotations

from pathlib import Path

from cartstream.core.settings import Settings
from cartstream.services.tools import bench_pipeline as bp
from tests.conftest import PG_ADMIN_URL


def test_a_small_point_on_two_workers_is_measured_end_to_end(tmp_path: Path) -> None:
    point = bp.run_point(
        Settings(), "reasoning", 10, 12.0, tmp_path / "point", PG_ADMIN_URL, workers=2, templates=2
    )
    assert point.workers == 2
    assert point.load.records > 0 and point.load.kept_pace, point.load
    assert point.load.by_topic.get("cart.weights", 0) > 0
    change = point.hops[bp.HOPS[1]]
    assert change.p50 is not None and change.p99 is not None  # basket changes were timed
    assert point.drained_s is not None, point.lag_series  # the lag probe read the group's lag
    assert point.lag_max > 0
    assert point.cpu["worker"] > 0 and point.cpu["broker"] > 0
    assert point.cpu["broker_first"] >= 0 and point.cpu["broker_last"] > 0  # its trend
    assert (tmp_path / "point" / "worker-1.log").exists()
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    bp.report([point], "cartstream bench pipeline --carts 10 --workers 2", doc)
    assert "| reasoning | 10 | 2 |" in doc.read_text()
