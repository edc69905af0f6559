"""The processes a chaos run starts and hurts: the broker (optionally on durable S3 storage)
behind a fault proxy, the database behind another, and the workers.

Topologies:
- `group`: N workers with every role in one consumer group (they share the partitions);
- `split`: the chart's deployment: detect, reason+anomalies+reconcile and persist as separate
  processes (each its own group), N of each stateful kind.

Every worker reaches Kafka and Postgres only through the proxies, so a cut or an outage hits
them all at once; the run's observers (lag probe, verifier) go through the same proxies or
straight to the database.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import make_url

from cartstream.core.settings import Settings
from cartstream.services.kafka.broker import EmbeddedBroker, free_port
from cartstream.services.kafka.durable import LocalS3
from cartstream.services.kafka.topics import ensure_tick_topics, ensure_topics
from cartstream.services.tools.chaos.proxy import FaultProxy, Mode
from cartstream.services.tools.harness import WorkerProcess, consumed_topics, worker_env
from cartstream.streams.app import group_id, parse_roles
from cartstream.streams.worker import stateful_roles

log = logging.getLogger(__name__)

Topology = Literal["group", "split"]
SPLIT_ROLES = ("detect", "reason,anomalies,reconcile", "persist")
WORKER_READY_S = 120.0


@dataclass
class Slot:
    """One worker process slot: its roles, its process, and what happened to it."""

    index: int
    roles: str
    ready_file: Path
    process: WorkerProcess | None = None
    starts: int = 0
    killed: int = 0  # SIGKILLs we sent
    unexpected_exits: list[str] = field(default_factory=list)


class Cluster:
    def __init__(
        self,
        folder: Path,
        settings: Settings,
        database_url: str,
        topology: Topology = "group",
        workers: int = 2,
        durable: bool = False,
        app_id: str = "chaos",
        worker_settings: dict[str, str] | None = None,
        worker_log_level: str = "warning",
    ) -> None:
        """`worker_settings`: extra CARTSTREAM_* variables for every worker."""
        self.folder = folder
        self.worker_settings = dict(worker_settings or {})
        self.worker_log_level = worker_log_level
        self.base = settings
        self.database_url = database_url
        self.topology = topology
        self.durable = durable
        self.app_id = app_id
        broker_port = free_port()
        self.broker_proxy = FaultProxy(broker_port, name="broker").start()
        self.s3 = LocalS3(folder / "s3.log") if durable else None
        self.broker = EmbeddedBroker(
            broker_port,
            log_path=folder / "broker.log",
            advertised_port=self.broker_proxy.port,
        )
        url = make_url(database_url)
        self.db_proxy = FaultProxy(int(url.port or 5432), name="database").start()
        self.proxied_database_url = url.set(
            host="127.0.0.1", port=self.db_proxy.port
        ).render_as_string(hide_password=False)
        self.settings = settings.with_overrides(
            kafka={**settings.kafka.model_dump(), "bootstrap_servers": self.bootstrap},
            broker_profile="tansu-s3" if durable else "tansu",
            app_id=app_id,
            database_url=self.proxied_database_url,
        )
        roles = [r for r in SPLIT_ROLES for _ in range(workers if "persist" not in r else 1)]
        if topology == "group":
            roles = ["all"] * workers
        self.slots = [Slot(i, r, folder / f"worker-{i}.ready") for i, r in enumerate(roles)]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_proxy.port}"

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.s3 is not None:
            self.s3.start()
            self.broker.storage = self.s3.storage
            self.broker.env = self.s3.broker_env()
        self.broker.start()
        ensure_topics(self.settings)
        every = [r for slot in self.slots for r in parse_roles(slot.roles)]
        ensure_tick_topics(self.settings, sorted(set(stateful_roles(every))))
        for slot in self.slots:
            self.start_worker(slot.index, wait=False)
        for slot in self.slots:
            assert slot.process is not None
            slot.process.wait_ready(slot.ready_file, WORKER_READY_S)

    def stop(self) -> None:
        for slot in self.slots:
            if slot.process is not None:
                slot.process.stop()
        self.broker.stop()
        if self.s3 is not None:
            self.s3.stop()
        self.broker_proxy.close()
        self.db_proxy.close()

    def groups(self) -> dict[str, list[str]]:
        """Consumer group -> the topics its workers consume (for the lag probe)."""
        out: dict[str, list[str]] = {}
        for slot in self.slots:
            roles = parse_roles(slot.roles)
            out[group_id(self.settings, roles)] = consumed_topics(self.settings, roles)
        return out

    # -- workers ------------------------------------------------------------------------------

    def start_worker(self, index: int, wait: bool = True) -> None:
        slot = self.slots[index]
        slot.ready_file.unlink(missing_ok=True)
        env = worker_env(self.settings, self.app_id, self.proxied_database_url, slot.ready_file)
        env.update(self.worker_settings)
        log_path = self.folder / f"worker-{index}.log"
        slot.process = WorkerProcess(
            env, log_path, roles=slot.roles, log_level=self.worker_log_level
        )
        slot.starts += 1
        if wait:
            slot.process.wait_ready(slot.ready_file, WORKER_READY_S)

    def kill_worker(self, index: int) -> None:
        slot = self.slots[index]
        if slot.process is not None and slot.process.alive():
            slot.killed += 1
            slot.process.stop(kill=True)

    def pause_worker(self, index: int) -> None:
        self._signal(index, signal.SIGSTOP)

    def resume_worker(self, index: int) -> None:
        self._signal(index, signal.SIGCONT)

    def _signal(self, index: int, signum: int) -> None:
        process = self.slots[index].process
        if process is not None and process.alive():
            os.killpg(process.proc.pid, signum)

    def check_workers(self) -> list[str]:
        """Exits nobody asked for; such a worker is restarted so the run goes on."""
        found = []
        for slot in self.slots:
            process = slot.process
            if process is None or process.alive():
                continue
            if slot.killed >= slot.starts:  # we killed it and have not restarted it yet
                continue
            code = process.proc.returncode
            what = f"worker {slot.index} ({slot.roles}) exited with {code}"
            slot.unexpected_exits.append(what)
            found.append(what)
            log.error("%s; see %s; restarting it", what, process.log_path)
            process.stop()
            slot.killed = slot.starts  # counted: restart it as after a kill
            self.start_worker(slot.index, wait=False)
        return found

    # -- the network and the broker -----------------------------------------------------------

    def cut_broker(self, mode: Mode) -> None:
        self.broker_proxy.set_mode(mode)

    def heal_broker(self) -> None:
        self.broker_proxy.set_mode("pass")

    def database_down(self) -> None:
        self.db_proxy.set_mode("reset")

    def database_up(self) -> None:
        self.db_proxy.set_mode("pass")

    def kill_broker(self) -> None:
        self.broker.stop(kill=True)

    def restart_broker(self) -> None:
        started = time.monotonic()
        self.broker.start()
        log.info("broker back after %.1f s of start-up", time.monotonic() - started)
