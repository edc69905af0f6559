"""The detector registry: every trained model under its content-hash version, and which one
workers run.

Layout of a registry folder (a volume in a deployment, a folder on a laptop):

    versions/<version>/detector.onnx        the model, byte for byte as registered
    versions/<version>/detector.card.json   its card (metrics, training config, data, classes)
    versions/<version>/detector.drift.json  its drift reference, when it was registered with one
    versions/<version>/registration.json    parent version, when, by whom, from where
    promotions.jsonl                        append-only: each promotion and rollback

Invariants: a version is the SHA-256 prefix of its ONNX bytes (`det-<12 hex>`, the card's own
`version`), so registering the same file twice is a no-op and a registered model cannot be
changed in place; the promoted version is the last line of `promotions.jsonl`, so history is
never rewritten and a rollback is itself a recorded promotion (of the version promoted before
the current one). Writes go to a temporary name and are renamed into place, so a reader never
sees half a model.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cartstream.exceptions import ConfigurationError

MODEL_FILE = "detector.onnx"
CARD_FILE = "detector.card.json"
REGISTRATION_FILE = "registration.json"
DRIFT_FILE = "detector.drift.json"  # models/drift.py: what honest shopping looks like to it
PROMOTIONS_FILE = "promotions.jsonl"
PROMOTED = "promoted"  # the version name that means "whatever is promoted now"


class RegistryError(ConfigurationError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to)."""


def content_version(path: Path) -> str:
    """The version of a model file: `det-` + the first 12 hex digits of its SHA-256."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "det-" + digest.hexdigest()[:12]


@dataclass(frozen=True)
class Registered:
    """One registered model."""

    version: str
    folder: Path
    card: dict[str, Any]
    registration: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.folder / MODEL_FILE

    @property
    def parent(self) -> str | None:
        parent = self.registration.get("parent")
        return str(parent) if parent else None

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.card.get("metrics") or {})


@dataclass(frozen=True)
class Promotion:
    at: str
    version: str
    action: Literal["promote", "rollback"]
    previous: str | None
    by: str
    reason: str
    gate: dict[str, Any] | None = None  # the promotion gate's verdict, when it ran


class Registry:
    """A registry folder (see the module docstring); created on first write."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- reading ---------------------------------------------------------------------------

    def versions(self) -> list[Registered]:
        """Every registered model, oldest registration first."""
        folder = self.root / "versions"
        found = [self._load(p) for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        return sorted(found, key=lambda r: (str(r.registration.get("registered_at")), r.version))

    def get(self, version: str) -> Registered:
        """A registered model by version, a unique prefix of one, or `promoted`."""
        if version == PROMOTED:
            promoted = self.promoted()
            if promoted is None:
                raise RegistryError(f"nothing is promoted in the registry {self.root}")
            version = promoted
        exact = self.root / "versions" / version
        if exact.is_dir():
            return self._load(exact)
        matches = [r for r in self.versions() if r.version.startswith(version)]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(r.version for r in self.versions()) or "none"
        what = "matches several versions" if matches else "is not registered"
        raise RegistryError(f"model {version!r} {what} in {self.root} (registered: {known})")

    def history(self) -> list[Promotion]:
        path = self.root / PROMOTIONS_FILE
        if not path.is_file():
            return []
        return [Promotion(**json.loads(line)) for line in path.read_text().splitlines() if line]

    def promoted(self) -> str | None:
        history = self.history()
        return history[-1].version if history else None

    def model_path(self, version: str = PROMOTED) -> Path:
        return self.get(version).model_path

    # -- writing ---------------------------------------------------------------------------

    def register(
        self, model_path: Path, parent: str | None = None, source: str | None = None
    ) -> Registered:
        """Copy a model and its card in under the model's content version (a no-op when that
        version is registered already), with its drift reference when one lies beside it.
        The card must exist and name the same version."""
        model_path = Path(model_path)
        card_path = model_path.with_suffix(".card.json")
        if not model_path.is_file():
            raise RegistryError(f"no model at {model_path}")
        if not card_path.is_file():
            raise RegistryError(f"{model_path} has no card ({card_path.name}): train it first")
        version = content_version(model_path)
        card = json.loads(card_path.read_text())
        if card.get("version") != version:
            raise RegistryError(
                f"{card_path.name} describes {card.get('version')}, but {model_path.name} is "
                f"{version}: the card belongs to another model"
            )
        if parent is not None:
            parent = self.get(parent).version
        final = self.root / "versions" / version
        if final.is_dir():
            return self._load(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=final.parent))
        try:
            shutil.copyfile(model_path, staging / MODEL_FILE)
            (staging / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
            drift = model_path.with_suffix(".drift.json")
            if drift.is_file():  # the detect and reason stages find it beside the model
                shutil.copyfile(drift, staging / DRIFT_FILE)
            registration = {
                "version": version,
                "parent": parent,
                "registered_at": _now(),
                "registered_by": _who(),
                "source": source or str(model_path.resolve()),
                "bytes": (staging / MODEL_FILE).stat().st_size,
            }
            (staging / REGISTRATION_FILE).write_text(json.dumps(registration, indent=1) + "\n")
            try:
                os.replace(staging, final)
            except OSError:
                if not final.is_dir():  # not a concurrent registration of the same version
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self._load(final)

    def promote(
        self,
        version: str,
        reason: str = "",
        by: str | None = None,
        gate: dict[str, Any] | None = None,
    ) -> Promotion:
        """Workers started (or restarted) from now on load `version`. `gate`: the promotion
        gate's verdict (models/promotion_gate.py), kept with the record; the caller decides."""
        target = self.get(version).version
        return self._append(target, "promote", reason, by, gate)

    def rollback(self, reason: str = "", by: str | None = None) -> Promotion:
        """Promote again the version that was promoted before the current one."""
        history = self.history()
        if not history:
            raise RegistryError(f"nothing is promoted in {self.root}: nothing to roll back")
        current = history[-1].version
        earlier = [p.version for p in history[:-1] if p.version != current]
        if not earlier:
            raise RegistryError(f"{current} is the only version ever promoted: nothing before it")
        return self._append(earlier[-1], "rollback", reason, by)

    # -- internals -------------------------------------------------------------------------

    def _append(
        self,
        version: str,
        action: Literal["promote", "rollback"],
        reason: str,
        by: str | None,
        gate: dict[str, Any] | None = None,
    ) -> Promotion:
        promotion = Promotion(_now(), version, action, self.promoted(), by or _who(), reason, gate)
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / PROMOTIONS_FILE).open("a") as f:
            f.write(json.dumps(promotion.__dict__) + "\n")
        return promotion

    def _load(self, folder: Path) -> Registered:
        card = json.loads((folder / CARD_FILE).read_text())
        registration = json.loads((folder / REGISTRATION_FILE).read_text())
        return Registered(folder.name, folder, card, registration)


def resolve_model(model_path: Path | None, registry: Path | None, version: str) -> Path | None:
    """Which model file a worker loads: an explicit path wins, then the registry's `version`
    (`promoted` by default), else None (the artifact bundled with the package)."""
    if model_path is not None:
        return model_path
    if registry is not None:
        return Registry(registry).model_path(version)
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
