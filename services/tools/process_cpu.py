"""A process's CPU time, read from outside it (Linux /proc), and its share of a core between
readings: what the benches and the chaos run say of the worker, the broker and the generator."""

from __future__ import annotations

import os
from pathlib import Path


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0 where it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Per named process, the cores it used between one reading and the next."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, float, float]] = {}  # name -> pid, time, CPU seconds

    def share(self, name: str, pid: int, now: float) -> float | None:
        """Cores used since the last reading of `name` at monotonic time `now`; None at its
        first reading, and when the process is another (a restart) or gone (less CPU time)."""
        used, last = process_cpu_s(pid), self._last.get(name)
        self._last[name] = (pid, now, used)
        if last is None or last[0] != pid or now <= last[1] or used < last[2]:
            return None
        return round((used - last[2]) / (now - last[1]), 3)

    def forget(self, name: str) -> None:
        """The next reading of `name` starts afresh (its process stopped)."""
        self._last.pop(name, None)
