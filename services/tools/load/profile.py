"""Where a worker's time goes under load: py-spy samples its stacks (every thread, without
pausing it) for the length of a bench point, and the samples are summed per function, by self
time (the function itself on top of the stack) and inclusive time (anywhere on it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Hot:
    function: str  # "name (file:line)" as py-spy writes a frame
    self_share: float  # of all samples
    total_share: float


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise FileNotFoundError("py-spy is not installed (pip install py-spy: the dev extra)")
    return found


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` for `seconds` into `out` (collapsed stacks, one per line)."""
    return subprocess.Popen(
        [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "100",
            "--nonblocking",
            "--threads",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def _samples(raw: Path) -> Iterator[tuple[str, list[str], int]]:
    """(whole stack, its frames without the thread's, samples) per line of py-spy's raw output."""
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack, [f for f in stack.split(";") if not f.startswith("thread ")], int(count)


def summarize(raw: Path, top: int = 20) -> list[Hot]:
    """The functions with the most samples, by self time."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for _, frames, n in _samples(raw):
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            anywhere[f] += n
    if total == 0:
        return []
    return [
        Hot(f, round(n / total, 4), round(anywhere[f] / total, 4)) for f, n in own.most_common(top)
    ]


def inclusive(raw: Path, suspects: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """Per suspect, the share of samples whose stack contains any of its needles (module or
    function names)."""
    hits: Counter[str] = Counter()
    total = 0
    for stack, _, n in _samples(raw):
        total += n
        for name, needles in suspects.items():
            if any(needle in stack for needle in needles):
                hits[name] += n
    return {name: round(hits[name] / total, 4) if total else 0.0 for name in suspects}
