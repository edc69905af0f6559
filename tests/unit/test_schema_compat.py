from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from cartstream.schemas.compat import check_backward
from cartstream.schemas.registry import SchemaRegistry, bundled_schema_dir
from cartstream.services.cli.main import cli


def test_bundled_schemas_are_backward_compatible() -> None:
    results = check_backward(SchemaRegistry(bundled_schema_dir()))
    assert results and all(r.compatible for r in results)


def _with_v2(tmp_path: Path, change: dict[str, object]) -> Path:
    folder = tmp_path / "avro"
    shutil.copytree(bundled_schema_dir(), folder)
    v1 = json.loads((folder / "session_event.v1.avsc").read_text())
    v2 = {**v1, "fields": [*v1["fields"], change]}
    (folder / "session_event.v2.avsc").write_text(json.dumps(v2))
    return folder


def test_added_field_with_default_is_compatible(tmp_path: Path) -> None:
    folder = _with_v2(tmp_path, {"name": "shopper_tier", "type": "string", "default": "none"})
    result = CliRunner().invoke(cli, ["schemas", "check", "--dir", str(folder)], obj={})
    assert result.exit_code == 0, result.output


def test_added_field_without_default_is_rejected(tmp_path: Path) -> None:
    folder = _with_v2(tmp_path, {"name": "shopper_tier", "type": "string"})
    results = check_backward(SchemaRegistry(folder))
    bad = [r for r in results if not r.compatible]
    assert [(r.name, r.reader_version, r.writer_version) for r in bad] == [("session_event", 2, 1)]
    result = CliRunner().invoke(cli, ["schemas", "check", "--dir", str(folder)], obj={})
    assert result.exit_code == 1
