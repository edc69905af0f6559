"""The worker's Faust monitor: only what Faust itself reads, nothing counted per record.

Faust always installs a `Monitor` sensor, and calls it four times for every record (message in,
stream event in and out, message out) to keep counters, timestamps and latency deques for its
web `/stats` page, which cartstream does not serve: its metrics are OpenTelemetry's (stage.*
and the lag gauge, core/metrics.py). Those four calls are a fifth to a quarter of what a record
costs a Faust agent that does nothing else (`cartstream bench faust`, docs/benchmarks.md).

Kept, because Faust reads them: `stream_inbound_time` (when a partition's stream last took a
record: the consumer's "slow processing" diagnostics compare it with the partition's commits)
and the per-commit and per-assignment hooks, which run per commit or rebalance, not per record.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from faust.sensors.monitor import Monitor
from faust.types import TP


class LeanMonitor(Monitor):  # type: ignore[misc]
    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = monotonic()
        return None  # no state: `on_stream_event_out` has nothing to time

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_table_del(self, table: Any, key: Any) -> None:
        return None

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None
