"""Typed stage state in changelogged tables: dataclasses in the stage, JSON-able dicts on the wire.

A stateful stage keeps one dataclass per key (`ReasonState`, `AnomalyState`, `ReconcileState`)
and a `StateCodec` that turns it into the dict its table's changelog stores and back. Every
stored state carries its `version`; a state written by an older release (changelogs outlive
releases) is brought up to date by that stage's upgrade steps, one per version, in one place.
Pydantic does the (de)serialisation and checks the shape, so a corrupt state fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter

from cartstream.exceptions import CartstreamError

S = TypeVar("S")
Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


class StateVersionError(CartstreamError):
    """A stored state was written by a newer release than this one."""


class StateCodec(Generic[S]):
    def __init__(
        self, state_type: type[S], version: int, upgrades: Mapping[int, Upgrade] | None = None
    ) -> None:
        """`upgrades[v]` turns a version-v dict into a version v+1 dict (missing: fields with
        defaults were added, nothing else changed)."""
        self.state_type = state_type
        self.version = version
        self.upgrades = dict(upgrades or {})
        self._adapter: TypeAdapter[S] = TypeAdapter(state_type)

    def load(self, data: Mapping[str, Any]) -> S:
        stored = dict(data)
        version = int(stored.get("version", 0))
        if version > self.version:
            raise StateVersionError(
                f"{self.state_type.__name__} version {version} is newer than this release's "
                f"{self.version}: roll the workers forward, not back"
            )
        for v in range(version, self.version):
            stored = self.upgrades.get(v, _unchanged)(stored)
        stored["version"] = self.version
        return self._adapter.validate_python(stored)

    def dump(self, state: S) -> dict[str, Any]:
        dumped: dict[str, Any] = self._adapter.dump_python(state, mode="json")
        return dumped


def _unchanged(data: dict[str, Any]) -> dict[str, Any]:
    return data
