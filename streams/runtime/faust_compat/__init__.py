"""Faust compatibility layer: the corrections to faust-streaming and aiokafka that at-least-once
delivery needs, and the test broker's workarounds (active only under the `tansu*` broker
profiles). `FIXES.md` beside this file says, for each, what goes wrong without it, the upstream
report, the test that fails without it and whether a real Kafka cluster needs it.

Only the runtime imports this package (an import contract in pyproject.toml)."""

from __future__ import annotations

from cartstream.core.settings import Settings
from cartstream.streams.runtime.faust_compat import (
    broker_wait,
    broker_workarounds,
    faust_fixes,
)
from cartstream.streams.runtime.faust_compat.in_order import InOrder
from cartstream.streams.runtime.faust_compat.lean_monitor import LeanMonitor
from cartstream.streams.runtime.faust_compat.log_holes import watch_changelog_tails

__all__ = ["InOrder", "LeanMonitor", "install", "watch_changelog_tails"]


def install(settings: Settings) -> None:
    """Every correction, and the broker profile's workarounds; idempotent (the corrections are
    installed once per process; the fetch limits follow the last settings given)."""
    tuning = settings.tuning
    faust_fixes.install()  # any broker needs them (FIXES.md)
    broker_wait.wait_for_broker_on_bootstrap(settings.kafka.startup_wait_s)
    # always: an app of another profile built earlier in this process must not leave its own
    broker_workarounds.fetch_limits(tuning.fetch_max_wait_ms, tuning.fetch_min_bytes)
    if tuning.end_offsets_from_fetch:  # the tansu profiles only
        broker_workarounds.end_offsets_from_fetch()
