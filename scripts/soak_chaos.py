"""Soak the CI-sized chaos suite: each e2e chaos test run N times in a row, each run in a
pytest process of its own, and a pass/fail table at the end (printed, and written to --out).

    .venv/bin/python scripts/soak_chaos.py --runs 20 --out docs/chaos-soak.md

A flaky test is a bug: nothing is retried. A failed run keeps its pytest folder (workers' logs,
the broker's) under --keep, named after the test and the run, and its first assertion line
goes into the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTS = "tests/e2e/test_chaos.py"


def chaos_tests() -> list[str]:
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", TESTS, "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("::", 1)[1] for line in listed.splitlines() if line.startswith(TESTS)]


def run_once(test: str, keep: Path, index: int) -> tuple[bool, float, str]:
    folder = keep / f"{test}-{index:02d}"
    began = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            f"{TESTS}::{test}",
            "-q",
            "-n0",
            "-p",
            "no:cacheprovider",
            f"--basetemp={folder}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    took = time.monotonic() - began
    passed = done.returncode == 0
    why = ""
    if passed:
        subprocess.run(["rm", "-rf", str(folder)], check=False)
    else:
        (keep / f"{test}-{index:02d}.out").write_text(done.stdout + done.stderr)
        errors = [line for line in done.stdout.splitlines() if line.startswith("E ")]
        why = errors[0][1:].strip()[:160] if errors else f"exit {done.returncode}"
    return passed, took, why


def report(rows: dict[str, list[tuple[bool, float, str]]], started: dt.datetime, args: Any) -> str:
    """The pass/fail table of the runs so far (written after every round, so a soak stopped
    early still leaves its table)."""
    table = [
        "| test | runs | passed | failed | slowest (s) | runs (✓ pass, ✗ fail) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for test, results in rows.items():
        ok = sum(1 for p, _, _ in results if p)
        marks = "".join("✓" if p else "✗" for p, _, _ in results)
        slowest = max(t for _, t, _ in results)
        table.append(
            f"| `{test}` | {len(results)} | {ok} | {len(results) - ok} | {slowest:.0f} | {marks} |"
        )
    failures = [
        f"- `{test}` run {i}: {why}"
        for test, results in rows.items()
        for i, (p, _, why) in enumerate(results, 1)
        if not p
    ]
    text = "\n".join(
        [
            f"Soak of the CI-sized chaos suite, {started:%Y-%m-%d %H:%M} UTC, "
            f"`python scripts/soak_chaos.py --runs {args.runs}"
            + (f" -k {args.only}" if args.only else "")
            + "` (each run its own pytest process, nothing retried):",
            "",
            *table,
            *(
                ["", "Failures (first assertion line; the run's folder is kept):", *failures]
                if failures
                else []
            ),
        ]
    )
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("-k", dest="only", default="", help="Only tests whose name has this.")
    parser.add_argument("--keep", type=Path, default=Path("cartstream-soak"))
    parser.add_argument("--out", type=Path, default=None, help="A markdown file for the table.")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.keep.mkdir(parents=True, exist_ok=True)
    tests = [t for t in chaos_tests() if args.only in t]
    rows: dict[str, list[tuple[bool, float, str]]] = {t: [] for t in tests}
    started = dt.datetime.now(dt.UTC)
    for index in range(1, args.runs + 1):
        for test in tests:
            passed, took, why = run_once(test, args.keep, index)
            rows[test].append((passed, took, why))
            print(f"run {index:2d} {test}: {'pass' if passed else 'FAIL'} in {took:.0f} s {why}")
            sys.stdout.flush()
        text = report(rows, started, args)  # after every round: a soak stopped early keeps it
        if args.out is not None:
            args.out.write_text(text + "\n")
    print(text)
    failures = [r for results in rows.values() for r in results if not r[0]]
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
