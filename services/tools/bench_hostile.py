"""`cartstream bench hostile`: how fast the pipeline works off hostile input, with nothing else.

One embedded broker, one worker with every role (the chaos run's `group` topology, one
worker), a database of its own. A burst of malformed records (every dead-letter kind of the
chaos fuzzer except the values of several MB, spread over the input topics as it spreads them),
then the chaos run's flood of valid frames from one cart's camera (the first 30 detected, the
rest dead-lettered for their rate, streams/frame_rate.py); for each, the seconds from the first
record sent until the group's lag reads 0 and the records/s that makes. The documented chaos
run sends 100 000 such records and a 10 000-frame flood while carts shop: these are the rates
its backlog drains at when the honest carts take none of the worker's time. Lag is read as
the chaos run reads it (a lower bound on this broker: a partition's last producer batch may be
unread when it reads 0, at most ~100 records of these).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psycopg
from kafka import KafkaProducer
from sqlalchemy.engine import URL, make_url

from cartstream.core.settings import Settings
from cartstream.services.kafka.lag import LagProbe
from cartstream.services.tools.chaos.cluster import Cluster
from cartstream.services.tools.chaos.fuzz import DEAD_LETTER_KINDS, Hostile, HostileInput

LIMIT_S = 900.0  # a burst not worked off by then is reported as such
# small producer batches: the lag probe's end offsets count only the first record of a
# partition's newest batch on this broker (services/kafka/lag.py), so a batch's other records
# can still be unread when it reads 0; with 16 KB batches that is at most ~100 records each
BATCH_BYTES = 16 * 1024


@dataclass(frozen=True)
class Drain:
    burst: str
    records: int
    send_s: float
    drained_s: float | None  # None: lag still above 0 at LIMIT_S

    @property
    def per_s(self) -> float | None:
        return self.records / self.drained_s if self.drained_s else None


def _drain(
    probe: LagProbe,
    producer: KafkaProducer,
    burst: str,
    records: Iterable[Hostile],
    limit_s: float,
) -> Drain:
    started = time.monotonic()
    sent = 0
    for r in records:
        producer.send(r.topic, key=r.key, value=r.value)
        sent += 1
    producer.flush()
    send_s = time.monotonic() - started
    while time.monotonic() - started < limit_s:
        sample = probe.sample()
        if sample is not None and sample[0] == 0:
            return Drain(burst, sent, send_s, time.monotonic() - started)
        time.sleep(0.5)
    return Drain(burst, sent, send_s, None)


def run(
    garbage: int, flood: int, folder: Path, admin_database_url: str, limit_s: float = LIMIT_S
) -> list[Drain]:
    name = f"bench_hostile_{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    admin = make_url(admin_database_url)
    with ExitStack() as undo:  # whatever was set up is taken down, last first
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        undo.callback(_drop_database, admin, name)
        url = admin.set(drivername="postgresql+psycopg", database=name)
        cluster = Cluster(
            folder, Settings(), url.render_as_string(hide_password=False), workers=1, app_id=name
        )
        undo.callback(cluster.stop)
        cluster.start()
        probe = LagProbe(cluster.settings, cluster.groups())
        undo.callback(probe.close)
        producer = KafkaProducer(
            bootstrap_servers=cluster.bootstrap, linger_ms=5, batch_size=BATCH_BYTES
        )
        undo.callback(producer.close)
        hostile = HostileInput(cluster.settings, seed=7)
        kinds = [k for k in DEAD_LETTER_KINDS if k != "huge"]
        malformed = (hostile.make(kinds[i % len(kinds)], i) for i in range(garbage))
        return [
            _drain(probe, producer, "malformed", malformed, limit_s),
            _drain(
                probe, producer, "flood (valid frames, one cart)", hostile.flood(flood), limit_s
            ),
        ]


def _drop_database(admin: URL, name: str) -> None:
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def table(drains: list[Drain]) -> str:
    lines = [
        "| burst | records | sent in (s) | lag 0 after (s) | records/s worked off |",
        "|---|---:|---:|---:|---:|",
    ]
    for d in drains:
        after = f"{d.drained_s:.1f}" if d.drained_s else "not drained"
        rate = f"{d.per_s:,.0f}" if d.per_s else "-"
        lines.append(f"| {d.burst} | {d.records:,} | {d.send_s:.1f} | {after} | {rate} |")
    return "\n".join(lines)


def write_report(out: Path, drains: list[Drain], command: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# Hostile input, worked off (`cartstream bench hostile`)\n\nCommand: `{command}` on "
        f"{time.strftime('%Y-%m-%d')} (2 cores: broker, Postgres, the worker and the producer "
        f"share them).\n\n{__doc__.split(chr(10), 2)[2].strip()}\n\n{table(drains)}\n"
    )
