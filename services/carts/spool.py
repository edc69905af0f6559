"""A cart's on-disk outbox: every event is appended here first, sent from here in order, and
forgotten only once the broker acknowledged it.

Layout: `seg-<first index>.log` segment files of framed records and a `cursor` file naming the
first record not yet acknowledged. A record is `<u32 length><u32 crc32><body>`; a torn write at
the tail (power cut mid-append) fails its CRC and is cut off when the spool is reopened.
Fully acknowledged segments are deleted.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cartstream.exceptions import SpoolError

_FRAME = struct.Struct("<II")
SEGMENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class SpoolRecord:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    def encode(self) -> bytes:
        topic = self.topic.encode()
        parts = [
            struct.pack("<H", len(topic)),
            topic,
            struct.pack("<I", len(self.key)),
            self.key,
            struct.pack("<I", len(self.value)),
            self.value,
            struct.pack("<H", len(self.headers)),
        ]
        for name, value in self.headers:
            raw = name.encode()
            parts += [struct.pack("<H", len(raw)), raw, struct.pack("<I", len(value)), value]
        return b"".join(parts)

    @classmethod
    def decode(cls, body: bytes) -> SpoolRecord:
        pos = 0

        def take(fmt: str) -> int:
            nonlocal pos
            (n,) = struct.unpack_from(fmt, body, pos)
            pos += struct.calcsize(fmt)
            return int(n)

        def raw(n: int) -> bytes:
            nonlocal pos
            out = body[pos : pos + n]
            pos += n
            return out

        topic = raw(take("<H")).decode()
        key = raw(take("<I"))
        value = raw(take("<I"))
        headers = tuple((raw(take("<H")).decode(), raw(take("<I"))) for _ in range(take("<H")))
        return cls(topic, key, value, headers)


class Spool:
    """Append-only, ordered, crash-safe. `read` from the cursor, `ack` to advance it."""

    def __init__(self, folder: Path, fsync: bool = False) -> None:
        self.folder = folder
        self.fsync = fsync
        self._lock = threading.Lock()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool folder {folder}: {exc}") from exc
        self._segments: list[int] = sorted(
            int(p.stem.split("-")[1]) for p in folder.glob("seg-*.log")
        )
        self._cursor = self._read_cursor()
        # (index, segment, byte offset, body length) of every record not yet acknowledged
        self._unacked: deque[tuple[int, int, int, int]] = deque()
        self._next_index = self._recover()
        self._writer: BinaryIO | None = None if not self._segments else self._open_tail()

    # -- files ---------------------------------------------------------------------------

    def _path(self, first: int) -> Path:
        return self.folder / f"seg-{first:012d}.log"

    def _read_cursor(self) -> int:
        path = self.folder / "cursor"
        try:
            return int(path.read_text().strip() or 0)
        except FileNotFoundError:
            return self._segments[0] if self._segments else 0
        except (OSError, ValueError) as exc:
            raise SpoolError(f"unreadable spool cursor {path}: {exc}") from exc

    def _scan(self, first: int) -> tuple[list[tuple[int, int]], int]:
        """(offset, length) of each intact record in a segment, and the intact byte length."""
        data = self._path(first).read_bytes()
        spans, pos = [], 0
        while pos + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, pos)
            body = data[pos + _FRAME.size : pos + _FRAME.size + length]
            if len(body) < length or zlib.crc32(body) != crc:
                break
            spans.append((pos, length))
            pos += _FRAME.size + length
        return spans, pos

    def _recover(self) -> int:
        next_index = self._cursor
        for n, first in enumerate(self._segments):
            spans, intact = self._scan(first)
            path = self._path(first)
            if n == len(self._segments) - 1 and intact < path.stat().st_size:
                with path.open("r+b") as fh:  # cut a torn tail
                    fh.truncate(intact)
            for k, (pos, length) in enumerate(spans):
                if first + k >= self._cursor:
                    self._unacked.append((first + k, first, pos + _FRAME.size, length))
            next_index = max(next_index, first + len(spans))
        return next_index

    def _open_tail(self) -> BinaryIO:
        return self._path(self._segments[-1]).open("ab")

    # -- API -----------------------------------------------------------------------------

    def append(self, record: SpoolRecord) -> int:
        body = record.encode()
        frame = _FRAME.pack(len(body), zlib.crc32(body)) + body
        with self._lock:
            if self._writer is None or self._writer.tell() + len(frame) > SEGMENT_BYTES:
                if self._writer is not None:
                    self._writer.close()
                self._segments.append(self._next_index)
                self._writer = self._path(self._next_index).open("ab")
            pos = self._writer.tell()
            self._writer.write(frame)
            self._writer.flush()
            if self.fsync:
                os.fsync(self._writer.fileno())
            index = self._next_index
            self._next_index += 1
            self._unacked.append((index, self._segments[-1], pos + _FRAME.size, len(body)))
            return index

    def read(self, max_records: int) -> list[tuple[int, SpoolRecord]]:
        """Up to `max_records` unacknowledged records from the cursor, with their indexes."""
        with self._lock:
            wanted = [self._unacked[i] for i in range(min(max_records, len(self._unacked)))]
        out: list[tuple[int, SpoolRecord]] = []
        handles: dict[int, BinaryIO] = {}
        try:
            for index, segment, pos, length in wanted:
                if segment not in handles:
                    handles[segment] = self._path(segment).open("rb")
                handle = handles[segment]
                handle.seek(pos)
                out.append((index, SpoolRecord.decode(handle.read(length))))
        finally:
            for handle in handles.values():
                handle.close()
        return out

    def ack(self, through: int) -> None:
        """Everything up to and including index `through` reached the broker."""
        with self._lock:
            self._cursor = max(self._cursor, through + 1)
            while self._unacked and self._unacked[0][0] < self._cursor:
                self._unacked.popleft()
            tmp = self.folder / "cursor.tmp"
            tmp.write_text(str(self._cursor))
            os.replace(tmp, self.folder / "cursor")
            while len(self._segments) > 1 and self._segments[1] <= self._cursor:
                self._path(self._segments.pop(0)).unlink(missing_ok=True)

    def pending(self) -> int:
        with self._lock:
            return len(self._unacked)

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
