"""`cartstream bench detector`: frames per second of the detector, bare and through the broker.

(a) bare: onnxruntime on ready uint8 batches, nothing else;
(b) agent: JPEG frames already in `cart.frames` on the embedded broker, a worker running only the
    detect stage with `detect.max_batch` = the batch size, rate = detections published per second
    (Kafka timestamps of the first and last detection, so start-up is not counted).
Prints a table and writes it to docs/benchmarks.md.
"""

from __future__ import annotations

import os
import platform
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from cartstream.core.ids import now_ms
from cartstream.core.settings import KafkaSettings, Settings
from cartstream.models.catalog import Catalog
from cartstream.models.inference import DetectorRuntime, model_card
from cartstream.models.render import encode_jpeg
from cartstream.models.train import render_dataset
from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import CART_FRAME
from cartstream.services.kafka.broker import EmbeddedBroker
from cartstream.services.kafka.topics import ensure_topics
from cartstream.services.tools.doc_sections import write_section
from cartstream.services.tools.process_cpu import process_cpu_s


@dataclass(frozen=True)
class Rate:
    fps: float
    cpu_ms: float  # CPU time per frame, all threads of the measured process(es)
    broker_cpu_ms: float = 0.0


@dataclass(frozen=True)
class BenchRow:
    batch: int
    bare: Rate
    stage_fps: float
    agent: Rate | None


def bare_rate(runtime: DetectorRuntime, frames: np.ndarray, batch: int, seconds: float) -> Rate:
    x = np.ascontiguousarray(np.resize(frames, (batch, *frames.shape[1:])))
    runtime.run_raw(x)  # warm-up
    done, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        runtime.run_raw(x)
        done += batch
    fps = done / (time.perf_counter() - started)
    return Rate(fps, (time.process_time() - cpu) * 1000 / done)


def frame_records(frames: np.ndarray, count: int) -> list[dict[str, object]]:
    """`count` valid frames of 64 carts' two cameras, captured 10 ms apart up to a second ago
    (each camera's 1.28 s apart: well within the detect stage's rate limit)."""
    now = now_ms()
    jpegs = [encode_jpeg(f) for f in frames]
    records: list[dict[str, object]] = []
    for i in range(count):
        cart = f"cart-{i % 64:03d}"
        records.append(
            {
                "event_id": str(uuid.uuid4()),
                "cart_id": cart,
                "store_id": "s",
                "session_id": f"{cart}-s",
                "camera_id": i % 2,
                "sequence": i,
                "capture_time_ms": now - 1000 - 10 * (count - 1 - i),
                "width": 224,
                "height": 224,
                "jpeg": jpegs[i % len(jpegs)],
            }
        )
    return records


def stage_rate(frames: np.ndarray, batch: int, count: int = 512) -> float:
    """The detect stage's own work in-process: Avro decode, validation, JPEG decode, inference,
    building and encoding the outputs. No Faust, no broker."""
    from cartstream.streams.detect import DetectStage
    from cartstream.streams.stage import Inbound

    # one batch at a time here, so inference may use every core
    settings = Settings().with_overrides(
        detect={"threads": os.cpu_count() or 2, "max_batch": batch}
    )
    stage = DetectStage(settings, Catalog.load())
    stage.start()  # loads the detector, as a worker does before its first batch
    codec = AvroCodec()
    values = [codec.encode(CART_FRAME, r) for r in frame_records(frames, count)]
    now = now_ms()
    detections = 0
    started = time.perf_counter()
    try:
        for i in range(0, count, batch):
            chunk = values[i : i + batch]
            records = [codec.decode(v, CART_FRAME) for v in chunk]
            inbounds = [
                Inbound(settings.topics.frames, 0, i + k, b"c", now) for k in range(len(chunk))
            ]
            for r, inbound in zip(records, inbounds, strict=True):
                stage.validate(r, inbound, now)
            for out in stage.handle_batch(records, inbounds, chunk, now):
                codec.encode(out.schema, out.record)
                detections += out.topic == settings.topics.detections
        seconds = time.perf_counter() - started
    finally:
        stage.close()
    if detections != count:  # a stage that detected nothing measured nothing
        raise RuntimeError(f"the detect stage published {detections} detections for {count} frames")
    return count / seconds


def agent_rate(frames: np.ndarray, batch: int, count: int, log_dir: Path) -> Rate:
    from cartstream.services.tools.harness import WorkerProcess, worker_env

    codec = AvroCodec()
    with EmbeddedBroker() as broker:
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=broker.bootstrap),
            broker_profile="tansu",
            app_id=f"bench-{uuid.uuid4().hex[:6]}",
        )
        ensure_topics(settings)
        producer = KafkaProducer(**settings.kafka.kafka_python_config(), linger_ms=20)
        for record in frame_records(frames, count):
            cart = str(record["cart_id"])
            producer.send(
                settings.topics.frames, key=cart.encode(), value=codec.encode(CART_FRAME, record)
            )
        producer.flush()
        producer.close()
        ready = log_dir / f"ready-{batch}"
        env = worker_env(settings, settings.app_id, "sqlite://", ready)
        env.update(
            {
                "CARTSTREAM_DETECT__MAX_BATCH": str(batch),
                "CARTSTREAM_DETECT__MAX_WAIT_MS": "5",
            }
        )
        counter = KafkaConsumer(
            **settings.kafka.kafka_python_config(), enable_auto_commit=False, fetch_max_wait_ms=200
        )
        tps = [
            TopicPartition(settings.topics.detections, p)
            for p in range(settings.topics.stream_partitions)
        ]
        counter.assign(tps)
        counter.seek_to_beginning(*tps)
        worker = WorkerProcess(env, log_dir / f"worker-batch{batch}.log", roles="detect")
        try:
            worker.wait_ready(ready, 90)
            # start-up is done when the ready file appears: CPU from here on is the frames'
            worker_cpu = process_cpu_s(worker.proc.pid)
            broker_cpu = process_cpu_s(broker.pid)
            stamps: list[float] = []  # counted as they come: the harness stays out of the way
            deadline = time.monotonic() + 600
            while len(stamps) < count and time.monotonic() < deadline:
                for records in counter.poll(timeout_ms=1000).values():
                    stamps += [r.timestamp for r in records]
            worker_cpu = process_cpu_s(worker.proc.pid) - worker_cpu
            broker_cpu = process_cpu_s(broker.pid) - broker_cpu
        finally:
            worker.stop()
            counter.close()
    if len(stamps) < count:
        raise RuntimeError(f"only {len(stamps)}/{count} detections at batch {batch}")
    span_s = (max(stamps) - min(stamps)) / 1000.0
    fps = (len(stamps) - 1) / span_s if span_s > 0 else float("inf")
    return Rate(fps, worker_cpu * 1000 / count, broker_cpu * 1000 / count)


def run_bench(
    batches: list[int], agent_frames: int, seconds: float, out: Path | None, log_dir: Path
) -> list[BenchRow]:
    catalog = Catalog.load()
    frames, _ = render_dataset(catalog, 64, seed=4242)
    runtime = DetectorRuntime().initialize()
    rows = []
    for b in batches:
        bare = bare_rate(runtime, frames, b, seconds)
        stage = stage_rate(frames, b)
        agent = agent_rate(frames, b, agent_frames, log_dir) if agent_frames else None
        rows.append(BenchRow(b, bare, stage, agent))
    if out is not None:
        write_report(out, rows, runtime, agent_frames)
    return rows


def table(rows: list[BenchRow]) -> str:
    best_bare = max(r.bare.fps for r in rows)
    lines = [
        "| batch | bare onnxruntime | bare CPU ms/frame | stage in-process | agent through broker "
        "| agent worker CPU ms/frame | broker CPU ms/frame | agent / best bare |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a = r.agent
        agent = (
            f"{a.fps:.0f} | {a.cpu_ms:.2f} | {a.broker_cpu_ms:.2f} | {a.fps / best_bare:.2f}"
            if a is not None
            else "- | - | - | -"
        )
        lines.append(
            f"| {r.batch} | {r.bare.fps:.0f} | {r.bare.cpu_ms:.2f} | {r.stage_fps:.0f} | {agent} |"
        )
    return "\n".join(lines)


def write_report(
    out: Path, rows: list[BenchRow], runtime: DetectorRuntime, agent_frames: int
) -> None:
    card = model_card(runtime.model_path)
    cores = os.cpu_count() or 1
    best = max(rows, key=lambda r: r.bare.fps)
    agents = [r for r in rows if r.agent is not None]
    ceiling = ""
    if agents:
        top = max(agents, key=lambda r: r.agent.fps if r.agent else 0.0)
        assert top.agent is not None
        per_frame = top.agent.cpu_ms + top.agent.broker_cpu_ms
        ceiling = f"""
CPU accounting at the agent's best batch ({top.batch}): the worker spends
{top.agent.cpu_ms:.2f} ms of CPU per frame and the broker {top.agent.broker_cpu_ms:.2f} ms, so
{cores} cores can carry at most {cores * 1000 / per_frame:.0f} frames/s through this path; the bare
loop at its best batch ({best.batch}) spends {best.bare.cpu_ms:.2f} ms per frame on inference
alone. On a machine where the broker runs elsewhere and the worker has cores of its own, the
agent's rate is bounded by its own CPU per frame, not the broker's.
"""
    text = f"""## Detector (`cartstream bench detector`)

Model {card["version"]} ({card["bytes"] / 1e6:.2f} MB ONNX, {card["parameters"]:,} parameters,
**{card["flops_per_frame"] / 1e6:.0f} MFLOPs per frame** at 224x224). Device: {runtime.provider}
on {platform.machine()} ({platform.processor() or "cpu"}), {cores} cores shared by broker, worker
and the benchmark itself. Bare: onnxruntime on ready uint8 batches. Agent: {agent_frames} JPEG
frames already on the embedded broker, a worker running only the detect stage with `max_batch` =
batch, rate from the Kafka timestamps of the first and last detection published (includes
consuming, Avro decoding, validation, JPEG decoding, inference, post-processing, encoding,
publishing). Stage in-process: the same stage code on the same frames without Faust or a broker
(Avro decode, validation, JPEG decode, inference, outputs). Rates in frames per second; CPU is
user + system time of every thread of the process, per frame.

{table(rows)}
{ceiling}
GPU: not measured yet: no GPU machine was lent to the session that produced this table.

What tracing costs end to end: [tracing-overhead.md](tracing-overhead.md) (`cartstream bench
tracing`).
"""
    write_section(out, "detector", text)
