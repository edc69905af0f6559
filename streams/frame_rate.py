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
- capture time, not arrival: a backlog delivered fast after an outage is spaced as it was
  captured, so honest frames never run out of tokens;
- a record read again (an offset at or before the camera's last one: a failed batch, a
  rebalance, a gap filled) takes no token and gets the answer it got before: refused if its
  offset was refused, else admitted. So re-reading never refuses an honest frame, and a record's
  outcome does not depend on how often it was read;
- a capture time at or before the camera's last one refills nothing (a flood that repeats or
  rewinds its clock cannot earn tokens), and the future is bounded by validation's skew;
- the buckets are this worker's memory, at most `MAX_CAMERAS` of them (the least recently
  seen goes first; a forgotten camera starts full again), each remembering its last
  `MAX_REFUSED` refusals: a flood's outcome may differ across restarts, an honest camera's
  cannot.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from cartstream.exceptions import ValidationError

MAX_CAMERAS = 200_000
MAX_REFUSED = 20_000  # refused offsets remembered per camera (a flood's), for re-reads


@dataclass
class _Bucket:
    tokens: float
    last_ms: int
    last_offset: int
    refused: dict[int, None] = field(default_factory=dict)  # offsets, oldest first

    def refuse(self, offset: int) -> None:
        self.refused[offset] = None
        if len(self.refused) > MAX_REFUSED:
            del self.refused[next(iter(self.refused))]


class FrameRateGuard:
    def __init__(self, max_rate: float, burst: int, max_cameras: int = MAX_CAMERAS) -> None:
        self.rate_per_ms = max_rate / 1000.0
        self.max_rate = max_rate
        self.burst = burst
        self.max_cameras = max_cameras
        self._buckets: OrderedDict[tuple[int, str, int], _Bucket] = OrderedDict()

    def admit(
        self, cart_id: str, camera_id: int, capture_time_ms: int, partition: int, offset: int
    ) -> None:
        """Take a token for this frame (the record at `offset` of input `partition`), or raise
        ValidationError when the camera has none."""
        key = (partition, cart_id, camera_id)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), capture_time_ms, offset)
            if len(self._buckets) > self.max_cameras:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            if offset <= bucket.last_offset:  # read again: the answer it got before
                if offset in bucket.refused:
                    raise self._refusal(cart_id, camera_id)
                return
            bucket.last_offset = offset
            elapsed = capture_time_ms - bucket.last_ms
            if elapsed > 0:
                bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate_per_ms)
                bucket.last_ms = capture_time_ms
        if bucket.tokens < 1.0:
            bucket.refuse(offset)
            raise self._refusal(cart_id, camera_id)
        bucket.tokens -= 1.0

    def _refusal(self, cart_id: str, camera_id: int) -> ValidationError:
        # the label before the colon is what metrics group by: no ids in it
        return ValidationError(
            f"frame rate: camera {camera_id} of cart {cart_id[:64]!r} sends frames faster "
            f"than {self.max_rate:g} a second of capture time (bursts of {self.burst}): "
            "not inferred"
        )

    def __len__(self) -> int:
        return len(self._buckets)
