"""The local span file: one compact JSON object a finished span, a line.

Written by `JsonLinesSpanExporter` (the default when no collector is configured), read by
`cartstream trace` and the demo report. Several processes (the demo's worker and its carts) may
append to one file: each batch is one `write` on an O_APPEND descriptor, so lines never
interleave. Past `max_bytes` the file is rotated once (`<name>.1`), so a long-running worker
keeps at most twice that on disk.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

YIELD_EVERY = 16  # spans serialised between two releases of the GIL


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    resource = span.resource.attributes if span.resource is not None else {}
    return {
        "trace_id": _hex(ctx.trace_id, 32),
        "span_id": _hex(ctx.span_id, 16),
        "parent_id": _hex(span.parent.span_id, 16) if span.parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_message": span.status.description,
        "service": resource.get("service.name"),
        "attributes": dict(span.attributes or {}),
        "links": [
            {
                "trace_id": _hex(link.context.trace_id, 32),
                "span_id": _hex(link.context.span_id, 16),
            }
            for link in span.links
        ],
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
    }


class JsonLinesSpanExporter(SpanExporter):
    def __init__(self, path: Path, max_bytes: int = 100_000_000) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        parts = []
        for start in range(0, len(spans), YIELD_EVERY):
            parts += [
                json.dumps(span_to_dict(s), separators=(",", ":"), default=str) + "\n"
                for s in spans[start : start + YIELD_EVERY]
            ]
            # hand the GIL over: a batch serialised in one go would hold up the event loop
            # (it waits for the GIL after every socket call) for milliseconds
            time.sleep(0)
        data = "".join(parts).encode()
        with self._lock:
            try:
                if self.path.stat().st_size > self.max_bytes:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            except FileNotFoundError:
                pass
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


@dataclass
class SpanRecord:
    """A span as read back from the file."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str | None
    service: str | None
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    children: list[SpanRecord] = field(default_factory=list, repr=False)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def stage(self) -> str:
        return str(self.attributes.get("cartstream.stage") or self.service or "?")

    @property
    def failed(self) -> bool:
        return self.status == "ERROR"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpanRecord:
        return cls(
            trace_id=d["trace_id"],
            span_id=d["span_id"],
            parent_id=d.get("parent_id"),
            name=d["name"],
            kind=d.get("kind", "INTERNAL"),
            start_ns=int(d["start_ns"]),
            end_ns=int(d.get("end_ns") or d["start_ns"]),
            status=d.get("status", "UNSET"),
            status_message=d.get("status_message"),
            service=d.get("service"),
            attributes=dict(d.get("attributes") or {}),
            links=[(link["trace_id"], link["span_id"]) for link in d.get("links") or []],
        )


def span_files(path: Path) -> list[Path]:
    """The span file and its rotated predecessor, oldest first, those that exist."""
    return [p for p in (path.with_name(path.name + ".1"), path) if p.is_file()]


def read_spans(paths: Sequence[Path]) -> Iterator[SpanRecord]:
    """Every span in the files; a torn last line (a writer killed mid-write) is skipped."""
    for path in paths:
        with path.open() as fh:
            for line in fh:
                try:
                    yield SpanRecord.from_dict(json.loads(line))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
