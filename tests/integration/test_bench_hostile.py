"""The CI-sized smoke of `cartstream bench hostile`: a small burst of malformed records and a
small flood through one worker on the real broker and Postgres, each worked off (lag read 0),
and the table says how fast."""

from __future__ import annotations

from pathlib import Path

from cartstream.services.tools import bench_hostile as bh
from tests.conftest import PG_ADMIN_URL


def test_a_small_burst_and_flood_are_worked_off_and_timed(tmp_path: Path) -> None:
    drains = bh.run(300, 40, tmp_path / "run", PG_ADMIN_URL, limit_s=120)
    assert [(d.burst.split()[0], d.records) for d in drains] == [("malformed", 300), ("flood", 40)]
    assert all(d.drained_s is not None and d.per_s for d in drains), drains
    assert (tmp_path / "run" / "worker-0.log").exists()
    out = tmp_path / "hostile.md"
    bh.write_report(out, drains, "cartstream bench hostile --garbage 300 --flood 40")
    assert "| malformed | 300 |" in out.read_text()
