"""Avro on the wire: the Avro specification's *single-object encoding*.

    bytes 0-1   0xC3 0x01            marker
    bytes 2-9   CRC-64-AVRO fingerprint of the writer schema's canonical form, little-endian
    bytes 10-   Avro binary encoding of the record

A consumer needs only the published .avsc files: it computes each file's fingerprint once, looks
up the writer schema by the 8 header bytes, and decodes (optionally resolving into its own
reader schema). Each message also carries a `cartstream-schema` header (e.g.
`io.cartstream.Checkout/v1`) for humans and tooling.
"""

from __future__ import annotations

import io
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from cartstream.exceptions import DecodeError, SchemaError
from cartstream.schemas.registry import SchemaRegistry, SchemaVersion, default_registry

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
SCHEMA_HEADER = "cartstream-schema"
CONTENT_TYPE_HEADER = "content-type"
CONTENT_TYPE = b"application/avro; encoding=single-object"


class AvroCodec:
    """Encode a record with the newest version of a schema; decode any known version."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry or default_registry()

    def encode(self, name: str, record: Any) -> bytes:
        version = self.registry.latest(name)
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(version.fingerprint)
        try:
            schemaless_writer(buf, version.parsed, record)
        except Exception as exc:
            raise SchemaError(f"record does not fit {version.label}: {exc}") from exc
        return buf.getvalue()

    def headers(self, name: str) -> list[tuple[str, bytes]]:
        """The descriptive headers to send beside an encoded `name` record."""
        label = self.registry.latest(name).label
        return [(CONTENT_TYPE_HEADER, CONTENT_TYPE), (SCHEMA_HEADER, label.encode())]

    def writer_of(self, data: bytes) -> SchemaVersion:
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) < HEADER_LEN:
            raise DecodeError("not Avro single-object encoded: shorter than its 10-byte header")
        if bytes(data[:2]) != MAGIC:
            raise DecodeError("not Avro single-object encoded: bad marker bytes")
        version = self.registry.by_fingerprint(bytes(data[2:HEADER_LEN]))
        if version is None:
            raise DecodeError(f"unknown writer schema fingerprint {bytes(data[2:10]).hex()}")
        return version

    def decode(self, data: bytes, expect: str | None = None) -> dict[str, Any]:
        """Decode one message; `expect` is the schema name the topic carries."""
        writer = self.writer_of(data)
        if expect is not None and writer.name != expect:
            raise DecodeError(f"wrong schema: got {writer.label}, this topic carries {expect}")
        reader = self.registry.latest(writer.name)
        buf = io.BytesIO(bytes(data[HEADER_LEN:]))
        try:
            record = schemaless_reader(
                buf, writer.parsed, reader.parsed if reader is not writer else None
            )
        except Exception as exc:
            raise DecodeError(f"corrupt {writer.label} body: {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(data) - HEADER_LEN:
            raise DecodeError(f"corrupt {writer.label} body: trailing bytes after the record")
        if not isinstance(record, dict):
            raise DecodeError(f"{writer.label} did not decode to a record")
        return record
