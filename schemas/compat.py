"""BACKWARD-compatibility check between consecutive versions of every schema.

BACKWARD (as in Confluent's registry): a consumer using version N can read data written with
version N-1. The check itself is the `avro` package's ReaderWriterCompatibilityChecker.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from cartstream.schemas.registry import SchemaRegistry


@dataclass(frozen=True)
class CompatResult:
    name: str
    reader_version: int
    writer_version: int | None  # None: first version, nothing to compare
    compatible: bool
    detail: str


def check_backward(registry: SchemaRegistry) -> list[CompatResult]:
    """One result per schema version; a version with a predecessor is checked against it."""
    results: list[CompatResult] = []
    checker = ReaderWriterCompatibilityChecker()
    for name in registry.names():
        versions = registry.versions(name)
        results.append(CompatResult(name, versions[0].version, None, True, "first version"))
        for writer, reader in itertools.pairwise(versions):
            reader_schema = avro.schema.parse(json.dumps(reader.raw))
            writer_schema = avro.schema.parse(json.dumps(writer.raw))
            outcome = checker.get_compatibility(reader_schema, writer_schema)
            ok = outcome.compatibility is SchemaCompatibilityType.compatible
            detail = "compatible" if ok else "; ".join(outcome.messages) or "incompatible"
            results.append(CompatResult(name, reader.version, writer.version, ok, detail))
    return results
