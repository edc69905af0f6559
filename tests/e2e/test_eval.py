"""`cartstream eval` end to end: simulated sessions through the broker and a worker, scored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_eval_scores_fused_reasoning_through_the_pipeline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTSTREAM_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cartstream",
            "eval",
            "--sessions",
            "12",
            "--seed",
            "4",
            "--mode",
            "fused",
            "--json",
            "--run-dir",
            str(tmp_path / "run"),
            "--report",
            str(tmp_path / "table.md"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads(proc.stdout)
    assert {"mode", "sessions", "cacc", "acd", "precision", "recall", "per_scenario"} <= set(scores)
    assert (scores["mode"], scores["sessions"]) == ("fused", 12)
    assert scores["checkouts_persisted"] == scores["checkouts"] > 0
    assert scores["changes_true"] > 30
    assert scores["cacc"] >= 0.8 and scores["precision"] >= 0.9 and scores["recall"] >= 0.9
    assert set(scores["per_scenario"]) >= {"lookalike", "equal_weight", "multi_item", "removal"}
    assert "| fused | 12 |" in (tmp_path / "table.md").read_text()
