"""The versioned .avsc files in `schemas/avro/`, parsed once, findable by name or fingerprint.

File names are `<snake_name>.v<N>.avsc`; the newest version of each name is what cartstream
writes and reads into. Older versions stay so that old messages still decode.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from cartstream.exceptions import SchemaError

_FILE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)\.v(?P<version>\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one schema."""

    name: str  # snake name of the file, e.g. "cart_frame"
    version: int
    path: Path
    raw: dict[str, Any]
    parsed: Any  # fastavro's parsed form
    fingerprint: bytes  # 8 bytes, CRC-64-AVRO, little-endian (as the single-object header wants)

    @property
    def full_name(self) -> str:
        return f"{self.raw.get('namespace', '')}.{self.raw['name']}".lstrip(".")

    @property
    def label(self) -> str:
        return f"{self.full_name}/v{self.version}"


class SchemaRegistry:
    """Every schema version found in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._versions: dict[str, dict[int, SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        files = sorted(folder.glob("*.avsc"))
        if not files:
            raise SchemaError(f"no .avsc files in {folder}")
        for path in files:
            self._add(path)

    def _add(self, path: Path) -> None:
        match = _FILE.match(path.name)
        if not match:
            raise SchemaError(f"{path.name}: schema files are named <name>.v<N>.avsc")
        try:
            raw = json.loads(path.read_text())
            parsed = parse_schema(raw, _write_hint=False)
        except Exception as exc:
            raise SchemaError(f"{path.name}: not a valid Avro schema: {exc}") from exc
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
        version = SchemaVersion(match["name"], int(match["version"]), path, raw, parsed, fp)
        self._versions.setdefault(version.name, {})[version.version] = version
        if fp in self._by_fingerprint and self._by_fingerprint[fp].name != version.name:
            raise SchemaError(f"{path.name} has the same fingerprint as another schema")
        self._by_fingerprint[fp] = version

    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[SchemaVersion]:
        try:
            return [v for _, v in sorted(self._versions[name].items())]
        except KeyError:
            raise SchemaError(f"unknown schema {name!r}; known: {self.names()}") from None

    def latest(self, name: str) -> SchemaVersion:
        return self.versions(name)[-1]

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fp)


def bundled_schema_dir() -> Path:
    return Path(str(resources.files("cartstream.schemas") / "avro"))


@cache
def default_registry() -> SchemaRegistry:
    """The registry of the schemas shipped with this package."""
    return SchemaRegistry(bundled_schema_dir())
