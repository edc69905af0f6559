"""`cartstream bench stages`: what the stateful stages' own work costs a record, in process.

The pipeline bench's load (template carts copied N times, detections replayed from the
committed detector, `load/recording.py`) runs through reason, anomalies and reconcile the way a
worker's `StageRunner` runs them, but without Faust, the broker or tracing: each record through
the stage's gate (decoding, validation), its `handle` against the key's live typed state, and,
once per batch of `BATCH` records, a snapshot of each touched key's state (`dump_state`, what
the changelog gets). Outputs go to the stages downstream in the order they were made, as on the
broker. Each part is timed apart, per stage. (`streams.testing.MemoryPipeline` delivers the
same way but round-trips every state through its stored form after each record, which a worker
does not, and has no place to time the parts.)

What this measures is the floor of a worker's cost per record: the pipeline bench's worker
spends this plus Faust's and aiokafka's per-record machinery, the spans and the publishing
(docs/benchmarks.md sets the two side by side).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.schemas.codec import AvroCodec
from cartstream.services.tools.doc_sections import write_section
from cartstream.services.tools.load.recording import Encoded, Templates, encode
from cartstream.streams.ingress import Ingress
from cartstream.streams.stage import Inbound, Stage
from cartstream.streams.worker import STAGES, stateful_roles

BATCH = 10  # records a batch: what the runner's batches held at 300 carts (docs/benchmarks.md)
START_MS = 1_700_000_000_000
LATE_MS = 20  # each record is handled this long after it was produced
_Message = tuple[str, bytes | None, bytes, dict[str, bytes], int]  # topic, key, value, headers, ms


@dataclass
class StageCost:
    """One stage's records and the seconds spent on each part of their handling."""

    stage: str
    records: int = 0
    outputs: int = 0
    letters: int = 0
    gate_s: float = 0.0
    handle_s: float = 0.0
    snapshot_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.gate_s + self.handle_s + self.snapshot_s

    def us_per_record(self, seconds: float) -> float:
        return 1e6 * seconds / max(1, self.records)


@dataclass
class _Node:
    stage: Stage[Any]
    gate: Ingress
    cost: StageCost
    states: dict[str, Any] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)


def run(
    carts: int, seconds: float, repeats: int = 3, templates: int = 20, seed: int = 11
) -> list[StageCost]:
    """The load of `carts` carts for `seconds` through the three stateful stages, `repeats`
    times over; per stage, the fastest pass (the one least disturbed by the rest of the
    machine)."""
    settings, catalog = Settings(), Catalog.load()
    recording = encode(
        Templates.simulate(settings, catalog, templates, seconds, "reasoning", seed),
        carts,
        seconds,
        START_MS,
        min(5.0, seconds),
        seed,
    )
    passes = [_one_pass(settings, catalog, recording.events) for _ in range(repeats)]
    return [min(costs, key=lambda c: c.total_s) for costs in zip(*passes, strict=True)]


def _one_pass(settings: Settings, catalog: Catalog, events: list[Encoded]) -> list[StageCost]:
    codec = AvroCodec()
    # the roles whose stage keeps a table, in the worker's own order: reason, anomalies, reconcile
    stages: list[Stage[Any]] = [STAGES[r](settings, catalog) for r in stateful_roles(list(STAGES))]
    nodes = []
    for stage in stages:
        stage.start()
        nodes.append(_Node(stage, Ingress(settings, codec, stage), StageCost(stage.name)))
    queue: deque[_Message] = deque(
        (e.topic, e.key, e.value, dict(e.headers), START_MS + e.at_ms) for e in events
    )
    offsets: dict[str, int] = {}
    try:
        while queue:
            topic, key, value, headers, produced = queue.popleft()
            offset = offsets[topic] = offsets.get(topic, -1) + 1
            inbound = Inbound(topic, 0, offset, key, produced, headers)
            for node in nodes:
                if topic in node.stage.inputs():
                    queue.extend(_deliver(node, inbound, value, produced + LATE_MS))
    finally:
        for stage in stages:
            stage.close()
    return [n.cost for n in nodes]


def _deliver(node: _Node, inbound: Inbound, value: bytes, now: int) -> list[_Message]:
    """One record through one stage, as `StageRunner._apply_record` handles it; its outputs
    encoded for the stages downstream."""
    cost, stage = node.cost, node.stage
    began = time.perf_counter()
    admitted = node.gate.admit(inbound, value, now)
    gated = time.perf_counter()
    cost.gate_s += gated - began
    cost.records += 1
    outputs = list(admitted.outputs)
    cost.letters += len(outputs)
    if admitted.record is not None:
        key = stage.state_key(admitted.record)
        result = stage.handle(node.states.get(key), admitted.record, inbound, now)
        node.states[key] = result.state
        node.touched.add(key)
        outputs += result.outputs
        cost.handle_s += time.perf_counter() - gated
    if cost.records % BATCH == 0:
        began = time.perf_counter()
        for touched in node.touched:
            state = node.states[touched]
            if state is not None:
                stage.dump_state(state)
        node.touched.clear()
        cost.snapshot_s += time.perf_counter() - began
    cost.outputs += len(outputs)
    codec = node.gate.codec
    return [(o.topic, o.key.encode(), codec.encode(o.schema, o.record), {}, now) for o in outputs]


def table(costs: list[StageCost]) -> str:
    lines = [
        "| stage | records | outputs | dead letters | gate (decode, validate) µs | handle µs"
        " | state snapshot µs | total µs a record | records/s on one core |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in costs:
        total = c.us_per_record(c.total_s)
        rate = 1e6 / max(total, 1e-9)
        lines.append(
            f"| {c.stage} | {c.records:,} | {c.outputs:,} | {c.letters:,}"
            f" | {c.us_per_record(c.gate_s):.1f} | {c.us_per_record(c.handle_s):.1f}"
            f" | {c.us_per_record(c.snapshot_s):.1f} | {total:.1f} | {rate:,.0f} |"
        )
    records = sum(c.records for c in costs)
    seconds = sum(c.total_s for c in costs)
    lines.append(
        f"| all three | {records:,} | | | | | | {1e6 * seconds / max(1, records):.1f}"
        f" | {records / max(seconds, 1e-9):,.0f} |"
    )
    return "\n".join(lines)


def write_report(out: Path, costs: list[StageCost], command: str) -> None:
    text = f"""## The stateful stages' own work (`cartstream bench stages`)

Produced by `{command}` on {date.today().isoformat()}: the pipeline bench's reasoning load run
through reason, anomalies and reconcile in one process, as a worker's stage runner runs them,
without Faust, the broker, tracing or publishing (services/tools/bench_stages.py); the fastest
of the passes, per stage. Microseconds of one core per record:

{table(costs)}

This is the floor of a worker's cost per record; the pipeline bench's worker spends it plus
Faust's and aiokafka's per-record machinery, the spans and the publishing.
"""
    write_section(out, "stages", text)
