"""The detect stage's limit on how fast one camera may send frames.

A cart's camera sends a few frames around each hand movement (the simulator: three a quarter
second apart, and one every 10 s between). A cart that sends thousands in a second (a broken
client in a loop, or someone flooding the topic with a stolen identity) would otherwise have
every frame decoded and inferred, and hold its partition's detections, the store's other carts'
included, for as long as that takes. Each camera of each cart gets a token bucket measured in
its own capture time: `detect.frame_burst` tokens, refilled at `detect.max_frame_rate` a second
of capture time. A frame with no token left is dead-lettered with the reason, before decoding
or inference.

Invariants:
- capture time, not arrival: a backlog delivered fast after an outage (or a restart re-reading
  it) is spaced as it was captured, so honest frames never run out of tokens, whatever order of
  workers, restarts and re-deliveries they meet. Their outcome is the same every time;
- a capture time at or before the camera's last one refills nothing (a flood that repeats or
  rewinds its clock cannot earn tokens), and the future is bounded by validation's skew;
- the buckets are this worker's memory, at most `MAX_CAMERAS` of them (the least recently
  seen goes first; a forgotten camera starts full again): a flood's outcome may differ across
  restarts, an honest camera's cannot.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from cartstream.exceptions import ValidationError

MAX_CAMERAS = 200_000


@dataclass
class _Bucket:
    tokens: float
    last_ms: int


class FrameRateGuard:
    def __init__(self, max_rate: float, burst: int, max_cameras: int = MAX_CAMERAS) -> None:
        self.rate_per_ms = max_rate / 1000.0
        self.max_rate = max_rate
        self.burst = burst
        self.max_cameras = max_cameras
        self._buckets: OrderedDict[tuple[str, int], _Bucket] = OrderedDict()

    def admit(self, cart_id: str, camera_id: int, capture_time_ms: int) -> None:
        """Take a token for this frame, or raise ValidationError when the camera has none."""
        key = (cart_id, camera_id)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), capture_time_ms)
            if len(self._buckets) > self.max_cameras:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = capture_time_ms - bucket.last_ms
            if elapsed > 0:
                bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate_per_ms)
                bucket.last_ms = capture_time_ms
        if bucket.tokens < 1.0:
            raise ValidationError(
                # the label before the colon is what metrics group by: no ids in it
                f"frame rate: camera {camera_id} of cart {cart_id[:64]!r} sends frames faster than "
                f"{self.max_rate:g} a second of capture time (bursts of {self.burst}): "
                "not inferred"
            )
        bucket.tokens -= 1.0

    def __len__(self) -> int:
        return len(self._buckets)
