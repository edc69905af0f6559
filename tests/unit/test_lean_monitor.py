"""The worker's Faust monitor keeps what Faust reads and counts nothing per record."""

from __future__ import annotations

from types import SimpleNamespace

from faust.sensors import Monitor
from faust.types import TP

from cartstream.streams.runtime.faust_compat.lean_monitor import LeanMonitor


def test_a_record_leaves_only_its_partitions_inbound_time() -> None:
    monitor, tp = LeanMonitor(), TP("cart.weights", 3)
    message = SimpleNamespace(time_in=None, time_out=None, time_total=None)
    monitor.on_message_in(tp, 7, message)
    state = monitor.on_stream_event_in(tp, 7, object(), object())
    monitor.on_stream_event_out(tp, 7, object(), object(), state)
    monitor.on_message_out(tp, 7, message)
    # what the consumer's slow-processing check reads: when the partition's stream last took one
    assert list(monitor.stream_inbound_time) == [tp]
    assert state is None
    assert (monitor.messages_received_total, monitor.events_total, monitor.events_active) == (
        0,
        0,
        0,
    )
    assert message.time_in is None and not monitor.events_runtime
    # Faust's own monitor, for contrast, counts and times each record
    faust_monitor = Monitor()
    faust_monitor.on_message_in(tp, 7, message)
    assert faust_monitor.messages_received_total == 1 and message.time_in is not None
