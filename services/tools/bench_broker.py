"""`cartstream bench broker`: what the embedded broker's requests cost as its log grows.

One embedded broker (Tansu 0.6, memory storage) and one topic of 8 partitions, filled with
one-record batches of 150 bytes, as carts write them (a cart's producer sends each weight packet
as it is measured). At each size the bench measures the broker's CPU (user + system time of its
process) per request, for the requests a worker and the benches make:

- *produce*: one one-record batch for each partition, sent in one flush (kafka-python, acks=1),
  per batch;
- *fetch, new data*: a consumer at the end of every partition; one record is added to each
  partition, then the consumer polls until it has them (the fetch of a consumer keeping up
  with its input);
- *fetch, nothing new*: the same consumer when nothing has been added (Tansu holds it for the
  fetch's whole wait, `FETCH_WAIT_MS`);
- *ListOffsets*: the latest offsets of the 8 partitions (a lag probe's question).

Each figure is the broker's CPU over a few seconds of back-to-back requests divided by the
requests made (the client's own time is not in it). A cost that grows with the batches held is
paid on every such request: Tansu's memory store lists a partition's stored batches to answer a
fetch that has something to return and to answer ListOffsets (`tansu-storage/src/dynostore.rs`,
`fetch` and `list_offsets`); a Kafka broker seeks in an index instead.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from cartstream.services.kafka.broker import EmbeddedBroker
from cartstream.services.tools.process_cpu import process_cpu_s

PARTITIONS = 8
VALUE = b"x" * 150
# long enough for Tansu to list every partition within one fetch at every size measured: at
# the `tansu` profile's 20 ms the fetch ends before a large partition is listed and returns
# nothing, and every retry lists again (reader_fetch_wait_ms in settings says where that starts)
FETCH_WAIT_MS = 500


@dataclass(frozen=True)
class Step:
    batches: int  # held in the topic, all partitions together
    produce_us: float  # broker CPU per batch, 8 of them (one a partition) in one flush
    fetch_new_ms: float  # per fetch that takes one new record from each partition
    fetch_idle_ms: float  # per fetch that finds nothing new
    list_offsets_ms: float  # per ListOffsets(latest) of the 8 partitions


def _broker_cpu_per_call(pid: int, call: Callable[[], object], seconds: float) -> float:
    """Broker CPU seconds per call, over `seconds` of calls back to back."""
    used, started, calls = process_cpu_s(pid), time.monotonic(), 0
    while time.monotonic() - started < seconds:
        call()
        calls += 1
    return (process_cpu_s(pid) - used) / max(1, calls)


def _fill(producer: KafkaProducer, topic: str, count: int) -> None:
    for i in range(count):
        producer.send(topic, VALUE, partition=i % PARTITIONS)
    producer.flush()


def _take(consumer: KafkaConsumer, count: int, timeout_s: float = 10.0) -> None:
    """Polls until `count` records came (or `timeout_s` passed)."""
    deadline, taken = time.monotonic() + timeout_s, 0
    while taken < count and time.monotonic() < deadline:
        taken += sum(len(records) for records in consumer.poll(timeout_ms=100).values())


def run(sizes: list[int], seconds: float, work: Path) -> list[Step]:
    """One step per size in `sizes` (batches held, ascending)."""
    steps: list[Step] = []
    work.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        topic = f"bench-broker-{uuid.uuid4().hex[:6]}"
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        admin.close()
        # one record a batch, as a cart's producer sends them
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0, batch_size=1)
        probe = KafkaConsumer(bootstrap_servers=broker.bootstrap)
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        held = 0
        for size in sorted(sizes):
            _fill(producer, topic, max(0, size - held))
            held = size
            # one batch a partition in one flush: what `fetch_new` adds before each fetch
            produce = _broker_cpu_per_call(
                broker.pid, lambda: _fill(producer, topic, PARTITIONS), seconds
            )
            consumer = KafkaConsumer(
                bootstrap_servers=broker.bootstrap,
                fetch_max_wait_ms=FETCH_WAIT_MS,
                fetch_min_bytes=1,
            )
            consumer.assign(tps)
            consumer.seek_to_end(*tps)
            for tp in tps:
                consumer.position(tp)

            def fetch_new(c: KafkaConsumer = consumer) -> None:
                _fill(producer, topic, PARTITIONS)
                _take(c, PARTITIONS)

            fetch_new_s = _broker_cpu_per_call(broker.pid, fetch_new, seconds)
            # the records it added are not the fetch's cost (clock ticks: never below 0)
            fetch_new_s = max(0.0, fetch_new_s - produce)
            while consumer.poll(timeout_ms=100):  # nothing left over for the idle fetches
                pass

            def fetch_idle(c: KafkaConsumer = consumer) -> None:
                c.poll(timeout_ms=FETCH_WAIT_MS + 100)  # one fetch, held for its whole wait

            idle = _broker_cpu_per_call(broker.pid, fetch_idle, seconds)
            consumer.close()
            listed = _broker_cpu_per_call(broker.pid, lambda: probe.end_offsets(tps), seconds)
            held = sum(probe.end_offsets(tps).values())
            per_batch = produce / PARTITIONS
            steps.append(Step(held, per_batch * 1e6, fetch_new_s * 1e3, idle * 1e3, listed * 1e3))
        probe.close()
        producer.close()
    return steps


def table(steps: list[Step]) -> str:
    lines = [
        "| batches held | produce (µs a batch) | fetch, new data (ms) | fetch, nothing new (ms) "
        "| ListOffsets of 8 partitions (ms) |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.batches:,} | {s.produce_us:.0f} | {s.fetch_new_ms:.2f} | {s.fetch_idle_ms:.2f} "
        f"| {s.list_offsets_ms:.2f} |"
        for s in steps
    ]
    return "\n".join(lines)


def per_batch_us(steps: list[Step]) -> dict[str, float]:
    """Broker CPU per batch held (µs) of each request: the slope from the smallest size to the
    largest."""
    first, last = steps[0], steps[-1]
    span = max(1, last.batches - first.batches)
    return {
        "a produce": (last.produce_us - first.produce_us) / span,
        "a fetch with new data": (last.fetch_new_ms - first.fetch_new_ms) * 1e3 / span,
        "a fetch that finds nothing": (last.fetch_idle_ms - first.fetch_idle_ms) * 1e3 / span,
        "a ListOffsets of the 8 partitions": (last.list_offsets_ms - first.list_offsets_ms)
        * 1e3
        / span,
    }


def write_report(out: Path, steps: list[Step], command: str) -> None:
    slopes = "; ".join(f"{what} {us:.2f} µs" for what, us in per_batch_us(steps).items())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# The embedded broker's cost as its log grows (`cartstream bench broker`)\n\n"
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, 2 cores shared by the broker and"
        f" the bench).\n{__doc__.split(chr(10), 2)[2].strip()}\n\n{table(steps)}\n\n"
        "*batches held*: in the topic after the row's measures (the produce and fetch measures"
        " add their own). Broker CPU per batch held, the slope from the first row to the last:"
        f" {slopes}.\n"
    )
