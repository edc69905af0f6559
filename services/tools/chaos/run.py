"""`cartstream chaos`: a fault-free reference run, then the same carts under a seeded schedule of
faults, then the verifier. Each run has its own broker, database and consumer groups.

Both runs use the product's default deadlines for data that never comes (a step's frames, a
checkout's last weight packets, the anomaly review). A deadline fires only once the stage, and
the stage upstream of it, have processed their partition to the end (streams/backlog.py,
streams/upstream.py), so a fault delays decisions and never changes them: the verifier's
"baskets identical to the reference" would show a decision a fault changed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.services.carts.cart_client import CartClient
from cartstream.services.carts.simulate import SimConfig, plan_carts, simulate
from cartstream.services.kafka.lag import LagProbe
from cartstream.services.storage.migrate import upgrade
from cartstream.services.storage.repository import Repository
from cartstream.services.tools.chaos.acked import AckLedger, absent_from_log
from cartstream.services.tools.chaos.cluster import Cluster, Topology
from cartstream.services.tools.chaos.schedule import Fault, Shape, plan
from cartstream.services.tools.chaos.verify import Outcome, Sample, Verdict, collect, verify
from cartstream.services.tools.harness import enforced_cart_auth
from cartstream.services.tools.process_cpu import CpuMeter
from cartstream.streams.app import parse_roles
from cartstream.streams.worker import stateful_roles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChaosConfig:
    folder: Path
    admin_database_url: str  # a Postgres server where each run gets its own database
    seed: int = 1
    carts: int = 6
    sessions: int = 4  # per cart
    speed: float = 10.0  # carts publish at this multiple of real time
    topology: Topology = "group"
    workers: int = 2
    shape: Shape = field(default_factory=Shape)
    fuzz_records: int = 0  # hostile records written by a foreign producer during the run
    deadline_s: float = 600.0  # after the carts finish: for the last checkout, then for zero lag
    worker_log_level: str = "warning"
    flood_frames: int = 10_000  # valid frames from one fuzz cart as fast as they go
    hold_s: float = 0.0  # keep the chaos run's cluster up this long after it, for inspection


@dataclass
class RunRecord:
    """One run: what it requested, what it left behind, and its timeline."""

    label: str
    requested: list[str]
    outcome: Outcome
    samples: list[Sample]
    events: list[tuple[float, str]]  # (t, what happened)
    unexpected_exits: list[str]
    seconds: float
    fuzz: dict[str, Any] = field(default_factory=dict)
    # cart records the broker acknowledged and its log does not hold (checked when sessions
    # were lost, for their carts: acked.py)
    acked_not_in_log: list[str] = field(default_factory=list)


@dataclass
class ChaosResult:
    config: ChaosConfig
    faults: list[Fault]
    reference: RunRecord
    chaos: RunRecord
    verdict: Verdict


def run_chaos(config: ChaosConfig, settings: Settings, say: Callable[[str], None]) -> ChaosResult:
    """The reference run, the chaos run and the verdict. Carts sign and workers verify as a
    store runs the product (the configured cart keys, else a fresh key enforced: harness.py)."""
    settings = settings.with_overrides(cart_auth=enforced_cart_auth(settings))
    faults = plan(config.seed, config.shape)
    run_id = f"chaos{config.seed}"  # the same session ids in both runs
    say(f"fault schedule (seed {config.seed}):")
    for fault in faults:
        say("  " + fault.describe())
    say("reference run (no faults)...")
    reference = run_once(config, settings, [], run_id, "reference", say)
    say(f"chaos run ({len(faults)} faults)...")
    chaos = run_once(config, settings, faults, run_id, "chaos", say)
    verdict = verify(
        reference.requested,
        reference.outcome,
        chaos.outcome,
        faults,
        chaos.samples,
        chaos.unexpected_exits,
    )
    verdict.fuzz_without_dead_letter = dict(chaos.fuzz.get("without_dead_letter", {}))
    return ChaosResult(config, faults, reference, chaos, verdict)


def run_once(
    config: ChaosConfig,
    settings: Settings,
    faults: list[Fault],
    run_id: str,
    label: str,
    say: Callable[[str], None],
) -> RunRecord:
    folder = config.folder / label
    folder.mkdir(parents=True, exist_ok=True)
    database_url = fresh_database(config.admin_database_url, f"chaos_{label}")
    durable = any(f.kind == "broker_restart" for f in faults)
    cluster = Cluster(
        folder,
        settings,
        database_url,
        topology=config.topology,
        workers=config.workers,
        durable=durable,
        app_id=f"chaos-{label}-{uuid.uuid4().hex[:6]}",
        worker_log_level=config.worker_log_level,
    )
    catalog = Catalog.load(settings.catalog_path)
    sim = SimConfig(carts=config.carts, sessions=config.sessions, seed=config.seed, run_id=run_id)
    planned = [s for s in plan_carts(sim, catalog) if s.plan.outcome == "checkout"]
    requested = [s.session_id for s in planned]
    repo = Repository.from_url(database_url)
    timeline: Timeline | None = None
    try:
        cluster.start()
        timeline = Timeline(cluster, faults, repo, say)
        ledger = AckLedger()
        carts = CartThread(cluster, sim, catalog, folder, config.speed, ledger)
        started = time.monotonic()
        carts.start()
        fuzz = start_fuzz(cluster, config, label)
        timeline.run_until(lambda: carts.done and timeline.idle(), config.deadline_s, carts)
        while repo.count_sessions(requested) < len(requested) and timeline.clock() < (
            carts.finished_at + config.deadline_s
        ):
            timeline.step()
        timeline.settle(until_zero_lag_s=config.deadline_s)
        seconds = time.monotonic() - started
        fuzz_report = fuzz.join() if fuzz is not None else {}
        if fuzz is not None:
            from cartstream.services.tools.chaos.fuzz import (
                flood_unlettered,
                lettered_ids,
                unaccounted,
            )

            lettered = lettered_ids(cluster.settings)
            fuzz_report["without_dead_letter"] = unaccounted(lettered, fuzz.delivered_ids)
            fuzz_report["flood_detected"] = flood_unlettered(lettered, fuzz.delivered_ids)
        stages = stateful_roles([r for s in cluster.slots for r in parse_roles(s.roles)])
        outcome = collect(repo, cluster.settings, requested, sorted(set(stages)))
        exits = [e for s in cluster.slots for e in s.unexpected_exits]
        lost_carts = {s.cart_id for s in planned if s.session_id not in outcome.checkouts}
        acked_not_in_log: list[str] = []
        if lost_carts:
            acked = ledger.of_keys(lost_carts)
            acked_not_in_log = [a.describe() for a in absent_from_log(cluster.settings, acked)]
            say(
                f"{label}: of {len(acked)} records the broker acknowledged "
                f"to the carts of lost sessions ({', '.join(sorted(lost_carts))}), "
                f"{len(acked_not_in_log)} are not in its log"
                + "".join(f"\n  {line}" for line in acked_not_in_log[:20])
            )
        return RunRecord(
            label,
            requested,
            outcome,
            timeline.samples,
            timeline.events,
            exits,
            seconds,
            fuzz_report,
            acked_not_in_log,
        )
    finally:
        if timeline is not None:
            timeline.close()
        repo.close()
        if config.hold_s > 0 and faults:
            say(
                f"{label}: holding for {config.hold_s:.0f} s: broker {cluster.bootstrap}, "
                f"database {database_url}, app {cluster.app_id}"
            )
            time.sleep(config.hold_s)
        cluster.stop()
        drop_database(config.admin_database_url, database_url)


def fresh_database(admin_url: str, prefix: str) -> str:
    """A new, migrated database on the admin URL's server; its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    text = url.render_as_string(hide_password=False)
    upgrade(text)
    return text


def drop_database(admin_url: str, database_url: str) -> None:
    """Drops a run's database (its outcome is collected by then); a failure is only logged."""
    name = make_url(database_url).database
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error as exc:
        log.warning("could not drop the run's database %s: %s", name, exc)


class CartThread:
    """The simulated carts publishing through the cart client (it spools while the broker is
    unreachable), in a thread, paced in real time."""

    def __init__(
        self,
        cluster: Cluster,
        sim: SimConfig,
        catalog: Catalog,
        folder: Path,
        speed: float,
        ledger: AckLedger,
    ) -> None:
        self.cluster, self.sim, self.catalog, self.folder = cluster, sim, catalog, folder
        self.ledger = ledger
        self.speed = speed
        self.done = False
        self.finished_at = float("inf")
        self.error: BaseException | None = None
        self.events = 0
        self._thread = threading.Thread(target=self._main, name="carts", daemon=True)
        self._clock = time.monotonic()

    def start(self) -> None:
        self._clock = time.monotonic()
        self._thread.start()

    def _main(self) -> None:
        settings = self.cluster.settings
        client = CartClient(settings, self.folder / "spool", on_delivered=self.ledger.note)
        try:
            report = simulate(
                self.sim,
                self.catalog,
                settings.topics,
                client,
                self.folder / "truth.jsonl",
                speed=self.speed,
            )
            self.events = sum(report.events.values())
            while not client.close(timeout_s=600):  # drains the spool, however long it takes
                log.warning("carts: spool not drained yet")
        except BaseException as exc:  # reported by the run, never swallowed
            self.error = exc
        finally:
            self.done = True
            self.finished_at = time.monotonic() - self._clock


class Sampler:
    """Samples consumer lag and checkouts persisted once a second, in its own thread: a probe
    that waits on an unreachable broker must never hold up the fault schedule."""

    def __init__(self, cluster: Cluster, repo: Repository, clock: Callable[[], float]) -> None:
        self.probe = LagProbe(cluster.settings, cluster.groups())
        self.repo, self.clock = repo, clock
        self.broker = cluster.broker
        self._cpu = CpuMeter()
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.probe.close()

    def _main(self) -> None:
        while not self._stop.is_set():
            t = self.clock()
            sample = self.probe.sample()
            lag, committed = sample if sample is not None else (None, None)
            persisted = self.repo.count_checkouts()
            self.samples.append(Sample(round(t, 2), lag, committed, persisted, self._broker_cpu()))
            self._stop.wait(max(0.0, 1.0 - (self.clock() - t)))

    def _broker_cpu(self) -> float | None:
        """The broker's CPU (cores) since the last call; None at the first call after a
        (re)start."""
        if not self.broker.alive():
            self._cpu.forget("broker")
            return None
        return self._cpu.share("broker", self.broker.pid, self.clock())


class Timeline:
    """Applies the faults on time and watches the workers for exits nobody asked for."""

    def __init__(
        self, cluster: Cluster, faults: list[Fault], repo: Repository, say: Callable[[str], None]
    ) -> None:
        self.cluster, self.say = cluster, say
        self.pending = sorted(faults, key=lambda f: f.at_s)
        self.active: list[Fault] = []
        self.events: list[tuple[float, str]] = []
        self.started = time.monotonic()
        self.sampler = Sampler(cluster, repo, self.clock)
        self.sampler.start()

    @property
    def samples(self) -> list[Sample]:
        return self.sampler.samples

    def clock(self) -> float:
        return time.monotonic() - self.started

    def idle(self) -> bool:
        return not self.pending and not self.active

    def run_until(self, done: Callable[[], bool], deadline_s: float, carts: CartThread) -> None:
        while not done():
            if carts.error is not None:
                raise carts.error
            if self.clock() > carts.finished_at + deadline_s:
                return
            self.step()

    def step(self) -> None:
        t = self.clock()
        for fault in [f for f in self.pending if f.at_s <= t]:
            self.pending.remove(fault)
            self._begin(fault, t)
        for fault in [f for f in self.active if f.end_s <= t]:
            self.active.remove(fault)
            self._end(fault, t)
        for exit_ in self.cluster.check_workers():
            self._note(t, "UNEXPECTED " + exit_)
        time.sleep(0.1)

    def settle(self, until_zero_lag_s: float) -> None:
        """Keep watching after the last checkout until lag reads 0 (or the time is up)."""
        end = self.clock() + until_zero_lag_s
        while self.clock() < end:
            self.step()
            if self.samples and self.samples[-1].lag == 0:
                return
        behind = self.sampler.probe.behind
        self.say(
            f"lag still {self.samples[-1].lag if self.samples else None}: " + "; ".join(behind[:20])
        )

    def close(self) -> None:
        self.sampler.stop()

    def _note(self, t: float, what: str) -> None:
        self.events.append((round(t, 2), what))
        self.say(f"  t={t:6.1f} s  {what}")

    def _begin(self, fault: Fault, t: float) -> None:
        c = self.cluster
        self._note(t, "begin: " + fault.what())
        if fault.kind == "kill":
            c.kill_worker(fault.target)
        elif fault.kind == "pause":
            c.pause_worker(fault.target)
        elif fault.kind == "db_outage":
            c.database_down()
        elif fault.kind == "broker_cut":
            c.cut_broker("blackhole" if fault.mode == "blackhole" else "reset")
        elif fault.kind == "broker_restart":
            c.kill_broker()
        self.active.append(fault)

    def _end(self, fault: Fault, t: float) -> None:
        c = self.cluster
        if fault.kind == "kill":
            c.start_worker(fault.target, wait=False)
        elif fault.kind == "pause":
            c.resume_worker(fault.target)
        elif fault.kind == "db_outage":
            c.database_up()
        elif fault.kind == "broker_cut":
            c.heal_broker()
        elif fault.kind == "broker_restart":
            c.restart_broker()
        self._note(t, f"end: {fault.kind}")


def start_fuzz(cluster: Cluster, config: ChaosConfig, label: str) -> Any:
    """Hostile input during the chaos run (see fuzz.py); None when not asked for."""
    if config.fuzz_records <= 0 or label != "chaos":
        return None
    from cartstream.services.tools.chaos.fuzz import FuzzThread

    fuzz = FuzzThread(cluster.settings, config.fuzz_records, config.seed, flood=config.flood_frames)
    fuzz.start()
    return fuzz
