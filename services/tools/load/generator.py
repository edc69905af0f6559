"""The load generator: a process of its own that replays a recording at real-time pace through
librdkafka (confluent-kafka), and measures itself.

It builds its recording (`recording.Templates` then `encode`, not timed), stamps it to start a few
seconds ahead, writes `armed.json` (the start time), then sends every record at its scheduled
moment. Per record it notes how late the send was against the schedule; per second, how many
records went out. `stats.json` says whether it kept pace: a run whose generator fell behind
measured the generator, not the pipeline.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.services.tools.load.recording import Mode, Templates, encode

_ENCODE_MARGIN_S = 3.0
_PACE_TOLERANCE_MS = 100.0  # a send this late against its schedule counts as falling behind


@dataclass(frozen=True)
class LoadConfig:
    bootstrap: str
    carts: int
    seconds: float
    mode: Mode
    folder: str  # where armed.json and stats.json go
    templates: int = 20
    ramp_s: float = 10.0
    seed: int = 11


@dataclass
class LoadStats:
    carts: int
    records: int
    checkouts: int
    start_ms: int
    seconds: float  # first send to last send
    send_rate: float  # records per second over that time
    late_ms_p50: float
    late_ms_p99: float
    late_ms_max: float
    kept_pace: bool  # p99 lateness within `_PACE_TOLERANCE_MS`
    delivery_errors: int
    per_second: list[int]
    by_topic: dict[str, int]
    build_s: float


def main(config: LoadConfig) -> None:
    """The process's entry point (`multiprocessing` spawn target)."""
    folder = Path(config.folder)
    folder.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    built = time.monotonic()
    cache = folder.parent / (
        f"templates-{config.mode}-{config.templates}-{int(config.seconds)}-{config.seed}.pickle"
    )
    if cache.exists():  # written by this bench for an earlier point: the same carts
        templates = pickle.loads(cache.read_bytes())
    else:
        catalog = Catalog.load(settings.catalog_path)
        templates = Templates.simulate(
            settings, catalog, config.templates, config.seconds, config.mode, config.seed
        )
        cache.write_bytes(pickle.dumps(templates))
    records = sum(len(evs) for _, evs in templates.carts.values())
    per_cart = records / max(1, len(templates.carts))
    guess_s = 40e-6 * per_cart * config.carts  # encoding runs at about 25 000 records/s
    start_ms = now_ms() + int((guess_s * 1.5 + _ENCODE_MARGIN_S) * 1000)
    recording = encode(
        templates, config.carts, config.seconds, start_ms, config.ramp_s, config.seed
    )
    build_s = time.monotonic() - built
    carts = sorted({e.key.decode() for e in recording.events})
    (folder / "armed.json").write_text(json.dumps({"start_ms": start_ms, "cart_ids": carts}))
    stats = replay(config.bootstrap, recording, build_s)
    (folder / "stats.json").write_text(json.dumps(asdict(stats)))


def replay(bootstrap: str, recording: Any, build_s: float) -> LoadStats:
    from confluent_kafka import Producer

    errors = [0]

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors[0] += 1

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "enable.idempotence": False,
            "acks": 1,
            # the carts' client (kafka-python) and the workers' (aiokafka) partition by Kafka's
            # murmur2; librdkafka's default (CRC32) would put a cart's records elsewhere
            "partitioner": "murmur2_random",
        }
    )
    events = recording.events
    late = np.zeros(len(events), dtype=np.float32)
    per_second: dict[int, int] = {}
    start_ms = recording.start_ms
    first = last = 0.0
    for i, e in enumerate(events):
        due_ms = start_ms + e.at_ms
        wait_s = (due_ms - time.time() * 1000.0) / 1000.0
        if wait_s > 0.0005:
            producer.poll(0)
            time.sleep(wait_s)
        sent = time.time() * 1000.0
        while True:
            try:
                producer.produce(
                    e.topic,
                    e.value,
                    e.key,
                    headers=e.headers,
                    on_delivery=delivered,
                    timestamp=int(sent),
                )
                break
            except BufferError:
                producer.poll(0.01)
        late[i] = sent - due_ms
        second = int((sent - start_ms) // 1000)
        per_second[second] = per_second.get(second, 0) + 1
        first = first or sent
        last = sent
        if i % 500 == 0:
            producer.poll(0)
    producer.flush(60)
    seconds = max(0.001, (last - first) / 1000.0)
    p50, p99 = (float(np.percentile(late, q)) for q in (50, 99)) if len(late) else (0.0, 0.0)
    return LoadStats(
        carts=recording.carts,
        records=len(events),
        checkouts=recording.checkouts,
        start_ms=start_ms,
        seconds=round(seconds, 2),
        send_rate=round(len(events) / seconds, 1),
        late_ms_p50=round(p50, 1),
        late_ms_p99=round(p99, 1),
        late_ms_max=round(float(late.max()) if len(late) else 0.0, 1),
        kept_pace=p99 <= _PACE_TOLERANCE_MS,
        delivery_errors=errors[0],
        per_second=[per_second.get(s, 0) for s in range(max(per_second, default=-1) + 1)],
        by_topic=dict(recording.by_topic),
        build_s=round(build_s, 1),
    )
