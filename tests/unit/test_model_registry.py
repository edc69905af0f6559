"""The detector registry (models/registry.py): content versions, promotion history, rollback,
and the detect stage loading the promoted model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.registry import (
    Registry,
    RegistryError,
    content_version,
    resolve_model,
)
from cartstream.streams.detect import DetectStage


def fake_model(folder: Path, content: bytes, metrics: dict[str, float]) -> Path:
    """A model file with a card naming its content version (never loaded by onnxruntime)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "detector.onnx"
    path.write_bytes(content)
    card = {"version": content_version(path), "metrics": metrics, "classes": ["A"]}
    path.with_suffix(".card.json").write_text(json.dumps(card))
    return path


def test_a_model_is_registered_once_under_its_content_version(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    model = fake_model(tmp_path / "a", b"model a", {"map50": 0.9})
    first = registry.register(model)
    assert first.version == content_version(model) and first.version.startswith("det-")
    assert first.model_path.read_bytes() == b"model a" and first.metrics == {"map50": 0.9}
    again = registry.register(model)  # the same bytes: nothing new
    assert again.registration == first.registration
    assert [r.version for r in registry.versions()] == [first.version]
    assert registry.get(first.version[:8]).version == first.version  # a unique prefix will do


def test_a_card_of_another_model_or_an_unknown_parent_is_refused(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    model = fake_model(tmp_path / "a", b"model a", {})
    model.write_bytes(b"model a, retrained")  # the card now describes other bytes
    with pytest.raises(RegistryError, match="another model"):
        registry.register(model)
    other = fake_model(tmp_path / "b", b"model b", {})
    with pytest.raises(RegistryError, match="not registered"):
        registry.register(other, parent="det-000000000000")
    assert registry.versions() == []


def test_promotions_and_rollbacks_are_recorded_and_rollback_returns_to_the_previous(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path / "registry")
    a = registry.register(fake_model(tmp_path / "a", b"model a", {}))
    b = registry.register(fake_model(tmp_path / "b", b"model b", {}), parent=a.version)
    assert b.parent == a.version
    assert registry.promoted() is None
    with pytest.raises(RegistryError, match="nothing is promoted"):
        registry.model_path()
    registry.promote(a.version, reason="first", by="ops")
    with pytest.raises(RegistryError, match="only version"):
        registry.rollback()
    registry.promote(b.version[:10], by="ops")
    assert registry.model_path() == b.model_path
    back = registry.rollback(reason="b confuses eggs", by="ops")
    assert (back.version, back.previous, back.action) == (a.version, b.version, "rollback")
    assert registry.promoted() == a.version
    history = [(p.action, p.version) for p in registry.history()]
    assert history == [
        ("promote", a.version),
        ("promote", b.version),
        ("rollback", a.version),
    ]


def test_an_explicit_path_wins_then_the_registry_then_the_bundled_model(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    a = registry.register(fake_model(tmp_path / "a", b"model a", {}))
    registry.promote(a.version)
    explicit = tmp_path / "elsewhere.onnx"
    assert resolve_model(explicit, registry.root, "promoted") == explicit
    assert resolve_model(None, registry.root, "promoted") == a.model_path
    assert resolve_model(None, registry.root, a.version) == a.model_path
    assert resolve_model(None, None, "promoted") is None


def test_the_detect_stage_loads_the_promoted_model_and_follows_promotions(
    tmp_path: Path, catalog: Catalog
) -> None:
    from tests.model_variants import copy_bundled, variant

    registry = Registry(tmp_path / "registry")
    first = registry.register(copy_bundled(tmp_path / "a"))
    second = registry.register(variant(tmp_path / "b", 0.0))
    registry.promote(first.version)
    settings = Settings().with_overrides(
        detect={"registry": registry.root, "threads": 1, "promotion_check_s": 5.0}
    )
    stage = DetectStage(settings, catalog)
    stage.start()
    try:
        assert stage.runtime is not None and stage.runtime.version == first.version
        assert stage.follows_promotions()
        registry.promote(second.version)
        # (a check 6 s on, not 5.0: (t + 5.0) - t can come out below 5.0 in floating point)
        assert not stage.maybe_switch(now=stage._checked_at + 1.0)  # not looked at yet
        assert stage.maybe_switch(now=stage._checked_at + 6.0)
        assert stage.runtime.version == second.version
        broken = tmp_path / "c" / "detector.onnx"  # a registered file onnxruntime cannot load
        broken.parent.mkdir()
        broken.write_bytes(b"not a model")
        card = {**second.card, "version": content_version(broken)}
        broken.with_suffix(".card.json").write_text(json.dumps(card))
        registry.promote(registry.register(broken).version)
        assert not stage.maybe_switch(now=stage._checked_at + 6.0)  # cannot load: keeps running
        assert stage.runtime.version == second.version
        loads: list[Path | None] = []
        load = stage._load
        stage._load = lambda path: (loads.append(path), load(path))[1]  # type: ignore[method-assign]
        assert not stage.maybe_switch(now=stage._checked_at + 6.0)
        assert loads == []  # the broken version is not loaded again at every check
        registry.promote(first.version)  # until another is promoted
        assert stage.maybe_switch(now=stage._checked_at + 6.0) and len(loads) == 1
        assert stage.runtime.version == first.version
    finally:
        stage.close()
    pinned = {**settings.detect.model_dump(), "model_version": first.version}
    assert not DetectStage(settings.with_overrides(detect=pinned), catalog).follows_promotions()


def test_the_cli_registers_promotes_lists_and_rolls_back(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cartstream.services.cli.main import cli

    where = ["--registry", str(tmp_path / "registry")]
    a = fake_model(tmp_path / "a", b"model a", {"map50": 0.97, "count_accuracy": 0.8})
    b = fake_model(tmp_path / "b", b"model b", {"map50": 0.99, "count_accuracy": 0.96})
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["models", *args], obj={})
        assert result.exit_code == 0, result.output
        return result.output

    run("register", str(a), *where)
    run("promote", content_version(a), *where)
    run("register", str(b), *where)  # its parent: the promoted version
    # fake models cannot be run, so the gate is skipped (and that is recorded)
    run("promote", content_version(b)[:9], "--reason", "better counts", "--force", *where)
    listed = json.loads(run("list", "--json", *where))
    assert [(m["version"], m["promoted"], m["parent"]) for m in listed] == [
        (content_version(a), False, None),
        (content_version(b), True, content_version(a)),
    ]
    assert "0.9900" in run("list", *where)
    run("rollback", "--reason", "eggs", *where)
    shown = json.loads(run("show", *where))
    assert shown["version"] == content_version(a) and shown["promoted"]
    assert [p["action"] for p in shown["promotions"]] == ["promote", "rollback"]
    assert json.loads(run("show", content_version(b), *where))["promotions"][0]["reason"] == (
        "better counts"
    )
    refused = runner.invoke(cli, ["models", "promote", "det-ffffffffffff", *where], obj={})
    assert refused.exit_code != 0 and "not registered" in str(refused.exception or refused.output)
