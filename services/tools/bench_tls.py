"""`cartstream bench tls`: what the TLS path costs clients, against plaintext.

One embedded broker, reached directly (plaintext) or through a TLS terminator on the same
machine (`services/tools/tls.py`, server certificate verified by the client). For each path a
kafka-python producer sends the same records (camera frames of ~`frame_kb` KB, the heaviest cart
traffic, and weight packets of a few hundred bytes) with acks=all, then a consumer reads them
all back; records/s and MB/s of each direction. The terminator is a Python asyncio proxy sharing
the machine's 2 cores with the broker and the clients, so the TLS numbers are a lower bound of
what a broker serving TLS itself would give.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from cartstream.core.settings import KafkaSettings
from cartstream.services.kafka.broker import EmbeddedBroker, free_port
from cartstream.services.tools.tls import TlsTerminator, make_certificates


@dataclass(frozen=True)
class Trial:
    path: str
    kind: str
    records: int
    megabytes: float
    produce_s: float
    consume_s: float


def _payloads(kind: str, count: int, frame_kb: int) -> list[bytes]:
    size = frame_kb * 1024 if kind == "frames" else 300
    return [os.urandom(size) for _ in range(count)]


def _trial(kafka: KafkaSettings, path: str, kind: str, payloads: list[bytes]) -> Trial:
    cfg = kafka.kafka_python_config()
    topic = f"bench-{path}-{kind}-{uuid.uuid4().hex[:6]}"
    producer = KafkaProducer(**cfg, acks="all", linger_ms=5, max_request_size=4 << 20)
    started = time.perf_counter()
    for i, value in enumerate(payloads):
        producer.send(topic, key=f"cart-{i % 16}".encode(), value=value)
    producer.flush()
    produce_s = time.perf_counter() - started
    producer.close()
    consumer = KafkaConsumer(**cfg, enable_auto_commit=False, fetch_max_wait_ms=50)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    started, seen = time.perf_counter(), 0
    deadline = started + 120
    while seen < len(payloads) and time.perf_counter() < deadline:
        seen += sum(len(batch) for batch in consumer.poll(timeout_ms=200).values())
    consume_s = time.perf_counter() - started
    consumer.close()
    megabytes = sum(len(v) for v in payloads) / 1e6
    return Trial(path, kind, seen, megabytes, produce_s, consume_s)


def run(frames: int, packets: int, frame_kb: int, repeats: int, work: Path) -> list[Trial]:
    files = make_certificates(work / "tls")
    tls_port = free_port()
    data = {
        "frames": _payloads("frames", frames, frame_kb),
        "weights": _payloads("weights", packets, frame_kb),
    }
    trials: list[Trial] = []
    # the TLS broker advertises the TLS port, where a plaintext client cannot follow: the
    # plaintext runs use a second broker of their own
    with (
        EmbeddedBroker(advertised_port=tls_port, log_path=work / "broker.log") as broker,
        TlsTerminator(("127.0.0.1", broker.port), files, port=tls_port),
        EmbeddedBroker(log_path=work / "broker-plain.log") as plain,
    ):
        paths = {
            "plaintext": KafkaSettings(bootstrap_servers=plain.bootstrap),
            "tls": KafkaSettings(
                bootstrap_servers=f"127.0.0.1:{tls_port}",
                security_protocol="SSL",
                ssl_cafile=files.ca,
            ),
        }
        for n in range(repeats):
            order = list(paths) if n % 2 == 0 else list(paths)[::-1]
            for kind, payloads in data.items():
                trials += [_trial(paths[p], p, kind, payloads) for p in order]
    return trials


def table(trials: list[Trial]) -> str:
    lines = [
        "| records | path | runs | records a run | produce records/s | produce MB/s "
        "| consume records/s | vs plaintext (produce, consume) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    best: dict[tuple[str, str], tuple[float, float, float]] = {}
    for kind in dict.fromkeys(t.kind for t in trials):
        for path in ("plaintext", "tls"):
            runs = sorted(
                (t for t in trials if t.kind == kind and t.path == path), key=lambda t: t.produce_s
            )
            mid = runs[len(runs) // 2]
            consume = sorted(t.records / t.consume_s for t in runs)[len(runs) // 2]
            rate, mbs = mid.records / mid.produce_s, mid.megabytes / mid.produce_s
            best[(kind, path)] = (rate, mbs, consume)
            versus = ""
            if path == "tls":
                p_rate, _, p_consume = best[(kind, "plaintext")]
                produce_change = 100 * (rate / p_rate - 1)
                versus = f"{produce_change:+.0f} %, {100 * (consume / p_consume - 1):+.0f} %"
            lines.append(
                f"| {kind} | {path} | {len(runs)} | {mid.records} | {rate:.0f} | {mbs:.1f} "
                f"| {consume:.0f} | {versus} |"
            )
    return "\n".join(lines)


def write_report(out: Path, trials: list[Trial], command: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# TLS path against plaintext (`cartstream bench tls`)\n\nCommand: `{command}`.\n"
        f"{__doc__.split(chr(10), 2)[2].strip()}\n\n{table(trials)}\n\n"
        "Medians over the runs (the order of the paths flips every repeat).\n"
    )
