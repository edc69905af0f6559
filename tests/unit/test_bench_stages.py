from __future__ import annotations

from cartstream.services.tools.bench_stages import run, table


def test_the_stage_bench_takes_honest_carts_through_all_three_stages() -> None:
    """Two carts for 150 s shop, check out and are reconciled: every stage gets records and
    makes outputs, nothing is dead-lettered, and every part of the handling is timed."""
    costs = run(carts=2, seconds=150, repeats=1, templates=1)
    assert [c.stage for c in costs] == ["reason", "anomalies", "reconcile"]
    reason, anomalies, reconcile = costs
    assert reason.records > 1_000  # weight packets, detections, session events
    assert 0 < anomalies.records <= reason.outputs  # reason's basket changes and closes
    assert reconcile.outputs > 0  # the checkouts
    assert all(c.letters == 0 for c in costs)
    assert all(c.gate_s > 0 and c.handle_s > 0 and c.snapshot_s > 0 for c in costs)
    rows = table(costs).splitlines()
    assert len(rows) == 2 + 3 + 1 and rows[-1].startswith("| all three |")
