"""One camera's frames are limited in its own capture time (streams/frame_rate.py): a flood is
dead-lettered before inference, honest shopping never meets the limit."""

from __future__ import annotations

import pytest

from cartstream.core.metrics import reason_label
from cartstream.core.settings import Settings, TopicSettings
from cartstream.exceptions import ValidationError
from cartstream.models.catalog import Catalog
from cartstream.services.carts.simulate import SimConfig, cart_events, plan_carts
from cartstream.services.tools.chaos.fuzz import HostileInput
from cartstream.streams.detect import DetectStage
from cartstream.streams.frame_rate import FrameRateGuard
from cartstream.streams.stage import Inbound
from cartstream.streams.testing import MemoryPipeline


class Camera:
    """Frames as a partition delivers them: each new record at the next offset."""

    def __init__(self, guard: FrameRateGuard) -> None:
        self.guard = guard
        self.next_offset = 0

    def send(self, frames: list[tuple[str, int, int]]) -> list[int]:
        """Indexes of the refused frames."""
        first = self.next_offset
        self.next_offset += len(frames)
        return self.read(frames, first)

    def read(self, frames: list[tuple[str, int, int]], first_offset: int) -> list[int]:
        out = []
        for i, (cart, camera, at) in enumerate(frames):
            try:
                self.guard.admit(cart, camera, at, 0, first_offset + i)
            except ValidationError as exc:
                assert f"camera {camera} of cart {cart!r}" in exc.reason
                assert exc.reason.startswith("frame rate: ") and "faster than" in exc.reason
                out.append(i)
        return out


def test_a_burst_passes_then_one_clock_earns_nothing() -> None:
    cam = Camera(FrameRateGuard(max_rate=10, burst=5))
    assert cam.send([("a", 0, 1000)] * 8) == [5, 6, 7]
    # a clock that stands still or runs back earns no tokens
    assert cam.send([("a", 0, 1000), ("a", 0, 400)]) == [0, 1]
    # another camera, and another cart, have their own buckets
    assert cam.send([("a", 1, 1000), ("b", 0, 1000)]) == []


def test_capture_time_refills_at_the_rate_up_to_the_burst() -> None:
    cam = Camera(FrameRateGuard(max_rate=10, burst=5))
    cam.send([("a", 0, 0)] * 5)
    assert cam.send([("a", 0, 300)] * 4) == [3]  # 300 ms: 3 tokens
    # a long pause fills the bucket to the burst, not beyond
    assert cam.send([("a", 0, 60_000)] * 6) == [5]
    # 10 frames a second, evenly spaced, never run out
    assert cam.send([("a", 0, 60_000 + 100 * i) for i in range(1, 500)]) == []


def test_a_record_read_again_gets_its_first_answer_and_takes_no_token() -> None:
    cam = Camera(FrameRateGuard(max_rate=2, burst=3))
    frames = [("a", 0, 1000 + 250 * i) for i in range(3)]  # leave 1 token
    assert cam.send(frames) == []
    for _ in range(10):  # a failing batch read again and again: admitted, and free
        assert cam.read(frames, 0) == []
    flood = [("a", 0, 2000)] * 6
    assert cam.send(flood) == [2, 3, 4, 5]  # 1 + 1 token (500 ms at 2/s): 2 frames
    for _ in range(3):
        assert cam.read(flood, 3) == [2, 3, 4, 5]  # the same answers, whatever the tokens
    assert cam.send([("a", 0, 2600)]) == []  # 1.2 tokens: nothing was taken by the reads


def test_the_least_recently_seen_camera_is_forgotten_first() -> None:
    guard = FrameRateGuard(max_rate=1, burst=1, max_cameras=2)
    cam = Camera(guard)
    assert cam.send([("a", 0, 0), ("b", 0, 0), ("a", 0, 0)]) == [2]
    cam.send([("c", 0, 0)])  # b goes: a was seen since
    assert len(guard) == 2
    assert cam.send([("a", 0, 0), ("b", 0, 0)]) == [0]  # a remembered, b starts full


def test_honest_shopping_never_meets_the_default_limit(catalog: Catalog) -> None:
    settings = Settings()
    stage = DetectStage(settings, catalog)
    topics = TopicSettings()
    planned = plan_carts(SimConfig(carts=3, sessions=6, seed=11, run_id="rate"), catalog)
    frames = 0
    for at, topic, _, _, record in cart_events(planned, catalog, topics, 50.0):
        if topic == topics.frames:
            inbound = Inbound(topic, 0, frames, record["cart_id"].encode(), at, {})
            stage.validate(record, inbound, at)  # raises if refused
            frames += 1
    assert frames > 300


@pytest.mark.parametrize("burst", [30, 4])
def test_a_flood_is_dead_lettered_before_inference(burst: int) -> None:
    settings = Settings(detect={"frame_burst": burst})
    pipeline = MemoryPipeline(settings, [DetectStage(settings, Catalog.load())])
    source = HostileInput(settings, seed=5)
    for hostile in source.flood(100):
        pipeline.publish_raw(hostile.topic, hostile.key, hostile.value or b"")
    pipeline.run()
    detections = pipeline.records(settings.topics.detections)
    letters = pipeline.records(settings.topics.dead_letters)
    assert len(detections) == burst
    assert len(letters) == 100 - burst
    rate = f"faster than {settings.detect.max_frame_rate:g} a second"
    assert all(rate in letter["reason"] for letter in letters)
    assert {letter["error_type"] for letter in letters} == {"VALIDATION"}
    # grouped under one bounded metric label, whichever cart floods
    assert {reason_label(letter["reason"]) for letter in letters} == {"frame rate"}
