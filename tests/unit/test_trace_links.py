"""Trace context through the stages (in memory): a checkout reaches every frame and packet."""

from __future__ import annotations

import uuid

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.streams.testing import MemoryPipeline
from tests.unit.test_stages import pipeline, simulated


def trace_id(traceparent: bytes) -> str:
    return traceparent.decode().split("-")[1]


def test_checkouts_link_their_changes_and_changes_link_their_frames_and_packets(
    settings: Settings, catalog: Catalog
) -> None:
    _, events = simulated(catalog, settings, carts=2, sessions=2, seed=5)
    p: MemoryPipeline = pipeline(settings, catalog)
    roots: dict[str, str] = {}  # trace id -> event id of the cart record that started it
    for _, topic, key, schema, record in events:
        tid = uuid.uuid4().hex
        roots[tid] = str(record["event_id"])
        headers = {"traceparent": f"00-{tid}-{uuid.uuid4().hex[:16]}-01".encode()}
        p.publish_raw(topic, key.encode(), p.codec.encode(schema, record), headers)
    p.run()
    t = settings.topics
    frames = {str(r["event_id"]) for _, topic, _, _, r in events if topic == t.frames}
    packets = {str(r["event_id"]) for _, topic, _, _, r in events if topic == t.weights}

    changes = [(p.codec.decode(m.value), m) for m in p.log[t.basket_changes]]
    items = [(c, m) for c, m in changes if c["action"] in ("ADD", "REMOVE")]
    assert items
    for change, msg in items:
        # the change continues the trace of the weight packet that completed its step ...
        assert roots[trace_id(msg.headers["traceparent"])] == change["source_event_id"]
        linked = {roots[trace_id(link)] for link in msg.links}
        # ... and links the frames it looked at (their detections) and the step's other packets
        assert set(change["frame_event_ids"]) <= linked | {change["source_event_id"]}
        assert linked <= frames | packets
    assert any(roots[trace_id(link)] in packets for _, m in items for link in m.links)

    checkouts = [(p.codec.decode(m.value), m) for m in p.log[t.checkouts]]
    assert checkouts
    for checkout, msg in checkouts:
        session = checkout["session_id"]
        mine = [m for c, m in changes if c["session_id"] == session]
        marker = mine[-1]  # the checkout request: the checkout continues its trace
        assert msg.headers["traceparent"] != marker.headers["traceparent"]
        assert trace_id(msg.headers["traceparent"]) == trace_id(marker.headers["traceparent"])
        change_traces = {m.headers["traceparent"] for m in mine[:-1]}
        assert change_traces <= set(msg.links)
        review = [m for m in p.log[t.reviews] if p.codec.decode(m.value)["session_id"] == session]
        assert review and review[0].headers["traceparent"] in msg.links
