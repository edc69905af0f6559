"""The chaos suite, CI-sized: two workers in one group, kills, a database outage and hostile
input while carts shop; every checkout must equal the fault-free run's (the documented run is
`cartstream chaos`, see docs/reliability.md)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cartstream.core.settings import Settings
from cartstream.services.tools.chaos.run import ChaosConfig, ChaosResult, run_chaos
from cartstream.services.tools.chaos.schedule import Shape

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def worker_log_lines(
    folder: Path, keep: Callable[[str], bool], lines: int, workers: str = "*"
) -> list[str]:
    """The last `lines` lines each chaos worker (`workers`: a glob of their indexes) logged
    that `keep` accepts, under the log's name."""
    out = []
    for log in sorted(folder.glob(f"worker-{workers}.log")):
        kept = [line for line in log.read_text(errors="replace").splitlines() if keep(line)]
        out += [f"--- {log.name} (its last {lines} such lines)", *kept[-lines:]]
    return out


def recovery_progress(folder: Path) -> list[str]:
    """Where a stalled partition stands: each worker's table recovery (Faust's `Recovery` lines
    and "Remaining for active recovery" tables), records fetched again, stalled agents with
    where they wait (`InOrder`), and agents Faust restarted."""

    def keep(line: str) -> bool:
        words = ("Recovery", " again", "stalled", "Restarting")
        return any(w in line for w in words) or line.startswith(("│", "|", "  "))

    return worker_log_lines(folder, keep, 40)


def crash_context(folder: Path, exits: list[str]) -> list[str]:
    """Why the workers in `exits` ("worker 0 (all) exited with 1") exited: their errors and
    tracebacks, without the reconnection noise every worker logs while the broker is away."""
    marks = ("ERROR", "CRITICAL", "Traceback", "Error:", "Exception", "  File ", "Crashed")
    noise = ("Unable connect", "Unable to update metadata", "NodeNotReadyError", "kafka.net.")

    def keep(line: str) -> bool:
        return any(m in line for m in marks) and not any(n in line for n in noise)

    indexes = sorted({int(m) for m in re.findall(r"worker (\d+) ", " ".join(exits))})
    return [line for i in indexes for line in worker_log_lines(folder, keep, 60, workers=str(i))]


def ci_config(tmp_path: Path, slots: int, **overrides: Any) -> ChaosConfig:
    """A CI-sized run: two kills and a 10 s database outage over `slots` worker processes."""
    shape = Shape(
        kills=2,
        pauses=0,
        db_outages=1,
        broker_cuts=0,
        workers=slots,
        kill_restart_s=(0.0, 2.0),
        db_outage_s=10.0,
        warmup_s=4.0,
        recovery_s=6.0,
    )
    return ChaosConfig(
        folder=tmp_path,
        admin_database_url=ADMIN_URL,
        speed=8.0,
        shape=shape,
        deadline_s=150.0,
        worker_log_level="info",  # a loss must come with the workers' recovery progress
        **overrides,
    )


def test_kills_an_outage_and_hostile_input_lose_nothing(tmp_path: Path) -> None:
    config = ci_config(
        tmp_path,
        slots=2,
        seed=7,
        carts=4,
        sessions=3,
        workers=2,
        fuzz_records=1000,
        flood_frames=300,
    )
    result, said = run(config)
    assert [f.kind for f in result.faults].count("kill") == 2
    assert_nothing_lost(result, said, tmp_path)
    fuzz = result.chaos.fuzz
    assert sum(fuzz["sent"].values()) >= 1000 + 300 - sum(fuzz["refused_by_broker"].values())
    assert not any(fuzz["without_dead_letter"].values()), fuzz["without_dead_letter"]
    # the flood: a camera's burst (30) detected by each worker process that read its
    # partition (two started, two restarted), every other frame dead-lettered for its rate
    assert 30 <= fuzz["flood_detected"] <= 30 * 4, fuzz["flood_detected"]


def test_the_charts_split_deployment_loses_nothing_under_kills_and_an_outage(
    tmp_path: Path,
) -> None:
    """detect, reason+anomalies+reconcile and persist as separate processes, as the chart
    deploys them (a worker without a stateful role once crashed at start-up)."""
    config = ci_config(
        tmp_path,
        slots=3,
        seed=8,
        carts=3,
        sessions=2,
        topology="split",
        workers=1,
        fuzz_records=200,
        flood_frames=0,
    )
    result, said = run(config)
    assert len(list((tmp_path / "chaos").glob("worker-*.log"))) == 3  # one process a role group
    assert_nothing_lost(result, said, tmp_path)


def test_a_broker_restart_on_durable_storage_loses_nothing(tmp_path: Path) -> None:
    """The broker killed with -9 and restarted on the same S3 storage (moto) while carts shop,
    with a worker kill before and after it. Once, table recovery waited for minutes after it
    (20 ms fetches on S3: the `tansu-s3` profile), a partition stopped for good at an offset
    the broker had counted but never stored (`LogHoles`), and a packet acknowledged to the cart
    was lost to a refused retry (no idempotent cart producer on `tansu-s3`)."""
    shape = Shape(
        kills=2,
        pauses=0,
        db_outages=0,
        broker_cuts=0,
        broker_restarts=1,
        workers=2,
        kill_restart_s=(0.0, 2.0),
        warmup_s=4.0,
        recovery_s=10.0,
    )
    config = ChaosConfig(
        folder=tmp_path,
        admin_database_url=ADMIN_URL,
        seed=22,
        carts=3,
        sessions=2,
        workers=2,
        speed=8.0,
        shape=shape,
        deadline_s=240.0,
        worker_log_level="info",
    )
    result, said = run(config)
    assert [f.kind for f in result.faults].count("broker_restart") == 1
    assert_nothing_lost(result, said, tmp_path)


def run(config: ChaosConfig) -> tuple[ChaosResult, list[str]]:
    said: list[str] = []
    return run_chaos(config, Settings(), said.append), said


def assert_nothing_lost(result: ChaosResult, said: list[str], folder: Path) -> None:
    verdict = result.verdict
    assert verdict.requested > 0
    assert verdict.lost == [], "\n".join([*said, *recovery_progress(folder / "chaos")])
    assert verdict.duplicated_rows == 0
    assert verdict.differences == [], verdict.differences
    assert verdict.missing_on_topic == []
    assert verdict.unexpected_exits == [], "\n".join(
        [*verdict.unexpected_exits, *crash_context(folder / "chaos", verdict.unexpected_exits)]
    )
    assert not any(verdict.open_sessions.values()), verdict.open_sessions
    assert verdict.lag_recovered, "\n".join(
        [str(verdict.lag_recovery_s), *said, *recovery_progress(folder / "chaos")]
    )
