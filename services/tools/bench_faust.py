"""`cartstream bench faust`: what a record costs a worker before any stage sees it.

One embedded broker and one topic of 8 partitions, filled beforehand with records of 150 bytes
in producer batches (so the broker's per-batch cost, docs/broker-cost.md, stays out of it).
Each pass reads all of them in a process of its own, as fast as it can, and does nothing with
them; the figure is that process's CPU (every thread: user + system) from its first record to
its last, per record:

- *aiokafka consumer*: `getmany` in a loop, the client Faust's driver wraps, with the `tansu`
  profile's fetch wait and minimum;
- *Faust agent, Faust's Monitor*: the worker's Faust app (`streams/app.py: create_app`, the
  `tansu` profile, the worker's sensors) with Faust's own `Monitor` sensor put back, and one
  agent taking the records in batches (`take_events`, as `StageRunner` does);
- *Faust agent, the worker's app*: the same with the worker's `LeanMonitor`
  (streams/runtime/faust_compat/lean_monitor.py).

Passes alternate between the kinds, and the fastest of each kind's passes is reported (the
one least disturbed by the rest of the machine). A worker's stages spend their own work on top
of this (`cartstream bench stages`), and the pipeline bench measures the whole.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from cartstream.services.kafka.broker import EmbeddedBroker
from cartstream.services.tools.doc_sections import write_section

PARTITIONS = 8
VALUE = b"x" * 150
KINDS = ("aiokafka", "faust-monitor", "worker")
LABELS = {
    "aiokafka": "aiokafka consumer (getmany)",
    "faust-monitor": "Faust agent, Faust's Monitor",
    "worker": "Faust agent, the worker's app",
}


@dataclass(frozen=True)
class Pass:
    kind: str
    records: int
    seconds: float  # first record to last
    cpu_s: float  # the process's, over those seconds
    monitor: str = ""  # the Faust app's monitor sensor (its class name; none: aiokafka)

    @property
    def us_per_record(self) -> float:
        return 1e6 * self.cpu_s / max(1, self.records)

    @property
    def records_per_s(self) -> float:
        return self.records / max(self.seconds, 1e-9)

    @property
    def cores(self) -> float:
        return self.cpu_s / max(self.seconds, 1e-9)


def run(records: int, repeats: int, work: Path, timeout_s: float = 300.0) -> list[Pass]:
    """`repeats` passes of each kind over one topic of `records` records."""
    work.mkdir(parents=True, exist_ok=True)
    passes: list[Pass] = []
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        topic = f"bench-faust-{uuid.uuid4().hex[:6]}"
        _fill(broker.bootstrap, topic, records)
        for i in range(repeats):
            for kind in KINDS:
                job = {
                    "kind": kind,
                    "bootstrap": broker.bootstrap,
                    "topic": topic,
                    "records": records,
                    "app_id": f"bench-faust-{kind}-{i}-{uuid.uuid4().hex[:4]}",
                    "datadir": str(work / "faust"),
                    "result": str(work / f"pass-{i}-{kind}.json"),
                }
                passes.append(_run_child(job, timeout_s))
    return passes


def _fill(bootstrap: str, topic: str, records: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=65536)
    for i in range(records):
        producer.send(topic, VALUE, key=str(i % 300).encode(), partition=i % PARTITIONS)
    producer.flush()
    producer.close()


def _run_child(job: dict[str, Any], timeout_s: float) -> Pass:
    done = subprocess.run(
        [sys.executable, "-m", "cartstream.services.tools.bench_faust", json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    result = Path(job["result"])
    if result.exists():
        return Pass(**json.loads(result.read_text()))
    raise RuntimeError(
        f"bench faust: the {job['kind']} pass reported nothing (exit {done.returncode}):\n"
        f"{done.stderr[-3000:]}"
    )


def _report(
    job: dict[str, Any], records: int, started: tuple[float, float], monitor: str = ""
) -> None:
    """Writes the pass's result (Faust takes stdout over for its log) and ends the process at
    once (a Faust worker's shutdown would only add to the bench's time)."""
    wall, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
    result = Pass(job["kind"], records, wall, cpu, monitor)
    Path(job["result"]).write_text(json.dumps(asdict(result)))
    os._exit(0)


async def _aiokafka(job: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from cartstream.core.settings import BrokerTuning

    tuning = BrokerTuning.for_profile("tansu")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=job["bootstrap"],
        fetch_max_wait_ms=tuning.fetch_max_wait_ms,
        fetch_min_bytes=tuning.fetch_min_bytes,
    )
    await consumer.start()
    consumer.assign([TopicPartition(job["topic"], p) for p in range(PARTITIONS)])
    await consumer.seek_to_beginning()
    got, started = 0, (0.0, 0.0)
    while got < job["records"]:
        batches = await consumer.getmany(timeout_ms=500, max_records=500)
        if batches and not got:
            started = (time.perf_counter(), time.process_time())
        got += sum(len(b) for b in batches.values())
    _report(job, got, started)


def _faust(job: dict[str, Any]) -> None:
    from cartstream.core.settings import KafkaSettings, Settings
    from cartstream.streams.app import create_app
    from cartstream.streams.tracing import install_process_spans

    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=job["bootstrap"]),
        broker_profile="tansu",
        app_id=job["app_id"],
        faust_datadir=Path(job["datadir"]),
    )
    app = create_app(settings, ["bench"], has_tables=False)
    if job["kind"] == "faust-monitor":
        from faust.sensors import Monitor

        app.conf.Monitor = Monitor  # the monitor is made on first use, when the worker starts
    topic = app.topic(job["topic"], value_serializer="raw", key_serializer="raw")
    install_process_spans(app, skip_topics=[job["topic"]])  # as the worker: batched topics
    got, started = 0, (0.0, 0.0)
    batch = settings.stage_batch

    async def take(stream: Any) -> None:
        nonlocal got, started
        async for events in stream.take_events(batch.max_size, within=batch.max_wait_ms / 1000):
            if not got:
                started = (time.perf_counter(), time.process_time())
            got += len(events)
            if got >= job["records"]:
                _report(job, got, started, type(app.monitor).__name__)

    app.agent(topic, name="take", concurrency=1)(take)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


def table(passes: list[Pass]) -> str:
    lines = [
        "| consumer | passes | records | records/s (fastest) | cores | µs of CPU a record "
        "(fastest) | µs a record, every pass |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for kind in KINDS:
        mine = [p for p in passes if p.kind == kind]
        if not mine:
            continue
        best = min(mine, key=lambda p: p.us_per_record)
        every = " / ".join(f"{p.us_per_record:.1f}" for p in mine)
        lines.append(
            f"| {LABELS[kind]} | {len(mine)} | {best.records:,} | {best.records_per_s:,.0f} "
            f"| {best.cores:.2f} | {best.us_per_record:.1f} | {every} |"
        )
    return "\n".join(lines)


def write_report(out: Path, passes: list[Pass], command: str) -> None:
    body = __doc__.split("\n", 2)[2].strip()
    text = (
        "## A record through Faust, before any stage (`cartstream bench faust`)\n\n"
        f"Produced by `{command}` on {date.today().isoformat()} (2 cores shared by the broker "
        f"and the pass).\n{body}\n\n{table(passes)}\n"
    )
    write_section(out, "faust", text)


if __name__ == "__main__":
    _job = json.loads(sys.argv[1])
    if _job["kind"] == "aiokafka":
        import asyncio

        asyncio.run(_aiokafka(_job))
    else:
        _faust(_job)
