"""Detect: camera frames -> detections, in batches.

Frames from many carts and partitions are coalesced into batches (at most
`detect.max_batch` frames, waiting at most `detect.max_wait_ms` for a batch to fill; the Faust
runner does this with `take_events`, which acknowledges a batch only after its outputs are
published). Each batch is decoded and run through the detector in an inference thread, so the
event loop (and every other agent in the worker) keeps going; one batch is in flight at a time,
so each partition's frames arrive in order and a frame never delivered is fetched again.

Every valid frame yields one Detection (possibly with no boxes: an empty view is evidence too),
stamped with the model version, on the frame's own partition number of `cart.detections`: the
reason stage takes a cart's detections, weight packets and session events from one partition
number, so detections follow where the cart put its frames whatever partitioner its client uses.
A frame whose best score is below `detect.review_below` also goes to `cart.review-frames` for
labelling. Bad frames go to the dead-letter topic. With detection disabled the stage validates
frames and publishes nothing, and says so at start-up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from cartstream.core.ids import derived_id
from cartstream.core.settings import Settings
from cartstream.exceptions import ConfigurationError
from cartstream.models.catalog import Catalog
from cartstream.models.drift import DriftReading
from cartstream.models.inference import (
    Detector,
    DetectorRuntime,
    FrameDetections,
    decode_jpegs,
    frame_stats,
)
from cartstream.models.registry import PROMOTED, Registry, resolve_model
from cartstream.models.remote import RemoteDetector
from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import (
    CART_FRAME,
    DETECTION,
    REVIEW_FRAME,
    SHADOW_DETECTION,
    CartFrame,
    Detection,
    DetectionBox,
    ReviewFrame,
    ShadowDetection,
)
from cartstream.schemas.validation import validate_frame
from cartstream.streams.deadletter import dead_letter
from cartstream.streams.frame_rate import FrameRateGuard
from cartstream.streams.frame_watch import FrameWatch
from cartstream.streams.stage import Inbound, Outbound, Result

log = logging.getLogger(__name__)


class DetectStage:
    name = "detect"
    stateful = False
    # batches in inference at once. One: a single consumer of batches sees each partition's
    # frames in offset order, which is how `InOrder` (faust_compat/in_order.py) can tell a frame
    # that was never delivered and fetch it again; two consumers interleave their batches.
    in_flight = 1

    def __init__(
        self, settings: Settings, catalog: Catalog, runtime: Detector | None = None
    ) -> None:
        """Cheap: the model is loaded by `start` (initialize / execute(batch) / finalize)."""
        self.settings = settings
        self.topics = settings.topics
        self.config = settings.detect
        self.catalog = catalog
        self.runtime: Detector | None = None
        self._given = runtime
        self._checked_at = 0.0  # when `maybe_switch` last looked at the registry
        self._refused: str | None = None  # a promoted version that would not load: not retried
        self.shadow: DetectorRuntime | None = None  # a candidate beside it (detect.shadow_*)
        self.drift: FrameWatch | None = None  # live detections vs the model's reference
        self.codec = AvroCodec()
        self.rate_guard = FrameRateGuard(self.config.max_frame_rate, self.config.frame_burst)

    def start(self) -> None:
        """Load and warm the detector; ConfigurationError if it was trained on another catalog."""
        if self.runtime is not None:
            return
        if not self.config.enabled:
            log.warning(
                "detect: detection disabled (CARTSTREAM_DETECT__ENABLED=false): frames are "
                "validated and dead-lettered when bad, but no detections are published"
            )
            return
        if self._given is None and self.config.endpoint is not None:
            self.runtime = self._remote(self.config.endpoint)
        else:
            self.runtime = self._given or self._load(
                resolve_model(
                    self.config.model_path, self.config.registry, self.config.model_version
                )
            )
        self._checked_at = time.monotonic()
        model = getattr(self.runtime, "model_path", None)
        self.drift = FrameWatch.for_model(self.settings, Path(model) if model else None)
        if self.config.shadow_version is not None:
            if self.config.registry is None:
                raise ConfigurationError("detect.shadow_version names a version of detect.registry")
            shadow = Registry(self.config.registry).model_path(self.config.shadow_version)
            self.shadow = self._load(shadow)
            log.warning(
                "detect: shadow model %s on %.0f %% of frames, published to %s",
                self.shadow.version,
                100 * self.config.shadow_share,
                self.topics.detections_shadow,
            )
        log.info(
            "detect: model %s on %s, batches of up to %d within %.1f ms",
            self.runtime.version,
            self.runtime.provider,
            self.config.max_batch,
            self.config.max_wait_ms,
        )

    def _load(self, model_path: Path | None) -> DetectorRuntime:
        # `in_flight` batches are inferred at once (see runner.BatchRunner): share the cores
        threads = self.config.threads or max(1, (os.cpu_count() or 2) // self.in_flight)
        runtime = DetectorRuntime(
            model_path,
            threshold=self.config.score_threshold,
            device=self.config.device,
            threads=threads,
        )
        if runtime.skus != [s.sku for s in self.catalog.skus]:
            raise ConfigurationError(
                f"detector {runtime.version} was trained on another catalog "
                f"(model {model_path or 'bundled with the package'})"
            )
        runtime.initialize()
        runtime.warm_up(self.config.max_batch)
        return runtime

    def drift_readings(self) -> list[DriftReading]:
        """PSI per store camera and SKU with a full enough window (for the metrics)."""
        return self.drift.readings() if self.drift is not None else []

    def _remote(self, endpoint: str) -> Detector:
        """The detector behind an inference server; the server owns model and version."""
        remote = RemoteDetector(
            endpoint,
            [s.sku for s in self.catalog.skus],
            threshold=self.config.score_threshold,
            timeout_s=self.config.endpoint_timeout_s,
        ).initialize()
        remote.warm_up(1)
        return remote

    def follows_promotions(self) -> bool:
        """Whether this stage switches models when the registry promotes another one."""
        c = self.config
        return (
            self._given is None
            and c.endpoint is None
            and c.model_path is None
            and c.registry is not None
            and c.model_version == PROMOTED
            and c.promotion_check_s > 0
        )

    def maybe_switch(self, now: float | None = None) -> bool:
        """Between batches: load the registry's promoted model if it is not the one running
        (looked up at most every `detect.promotion_check_s`). The switch happens between two
        batches, so no frame is skipped; a frame delivered again after it is detected by the new
        model, and reason keeps the first detection of each frame. A model that cannot be loaded
        (another catalog, a broken file) is logged once and the running one kept until another
        version is promoted."""
        if self.runtime is None or not self.follows_promotions():
            return False
        now = time.monotonic() if now is None else now
        if now - self._checked_at < self.config.promotion_check_s:
            return False
        self._checked_at = now
        assert self.config.registry is not None
        registry = Registry(self.config.registry)
        promoted: str | None = None
        try:
            promoted = registry.promoted()
            if promoted in (None, self.runtime.version, self._refused):
                return False
            runtime = self._load(registry.model_path(promoted))
        except Exception as exc:  # onnxruntime's own errors too: keep detecting
            self._refused = promoted
            log.error(
                "detect: cannot switch to the promoted model %s: %s; keeping %s until another "
                "version is promoted",
                promoted,
                exc,
                self.runtime.version,
            )
            return False
        old, self.runtime = self.runtime, runtime
        log.warning(
            "detect: switched from model %s to the promoted %s", old.version, runtime.version
        )
        old.close()  # one batch in flight at a time (`in_flight`): nobody is using it
        return True

    def close(self) -> None:
        for runtime in (self.runtime, self.shadow):
            if runtime is not None:
                runtime.close()
        self.runtime = self.shadow = None

    def inputs(self) -> Mapping[str, str]:
        return {self.topics.frames: CART_FRAME}

    def describe(self) -> dict[str, str]:
        if self.runtime is None:
            return {"cartstream.model": "disabled", "cartstream.provider": "none"}
        return {
            "cartstream.model": self.runtime.version,
            "cartstream.provider": self.runtime.provider,
        }

    def validate(self, record: Mapping[str, Any], inbound: Inbound, now_ms: int) -> None:
        # the JPEG itself is decoded once, with its batch (see `handle_batch`)
        validate_frame(
            cast(CartFrame, record),
            now_ms,
            self.settings.max_future_skew_s,
            self.settings.max_frame_bytes,
            decode=self.runtime is None,
        )
        # last: a frame refused for another reason takes no token
        self.rate_guard.admit(
            record["cart_id"],
            record["camera_id"],
            record["capture_time_ms"],
            inbound.partition,
            inbound.offset,
        )

    def state_key(self, record: Mapping[str, Any]) -> str:
        return str(record["session_id"])

    def load_state(self, data: Mapping[str, Any]) -> None:
        return None  # stateless

    def dump_state(self, state: None) -> dict[str, Any]:
        return {}

    def handle(
        self, state: None, record: Mapping[str, Any], inbound: Inbound, now_ms: int
    ) -> Result[None]:
        raw = self.codec.encode(CART_FRAME, record)  # same bytes as the cart sent (same schema)
        return Result(None, self.handle_batch([record], [inbound], [raw], now_ms))

    def handle_batch(
        self,
        records: Sequence[Mapping[str, Any]],
        inbounds: Sequence[Inbound],
        raw_values: Sequence[bytes],
        now_ms: int,
    ) -> list[Outbound]:
        """Detections (and review frames, dead letters) for a batch of valid frame records."""
        if self.runtime is None or not records:
            return []
        self.maybe_switch()
        frames = [cast(CartFrame, r) for r in records]
        images, decoded = decode_jpegs([f["jpeg"] for f in frames])
        outputs: list[Outbound] = []
        good = [i for i in range(len(frames)) if decoded[i]]
        for i in range(len(frames)):
            if not decoded[i]:
                letter = dead_letter(
                    self.name, inbounds[i], raw_values[i], "VALIDATION", "undecodable JPEG", now_ms
                )
                outputs.append(
                    Outbound(
                        self.topics.dead_letters,
                        frames[i]["cart_id"],
                        "dead_letter",
                        letter,
                        inbounds[i].traceparent,
                    )
                )
        if not good:
            return outputs
        batch = images if len(good) == len(frames) else images[good]
        started = time.perf_counter()
        results = self.runtime.run(batch)
        champion_ms = (time.perf_counter() - started) * 1000 / len(good)
        brightness, contrast = frame_stats(batch)
        for n, (i, found) in enumerate(zip(good, results, strict=True)):
            quality = (float(brightness[n]), float(contrast[n]))
            outputs += self._outputs(frames[i], found, inbounds[i], quality)
        if self.shadow is not None:
            share = self.config.shadow_share
            chosen = [n for n, i in enumerate(good) if shadowed(frames[i]["event_id"], share)]
            if chosen:
                started = time.perf_counter()
                candidates = self.shadow.run(batch[chosen])
                candidate_ms = (time.perf_counter() - started) * 1000 / len(chosen)
                for n, found in zip(chosen, candidates, strict=True):
                    i = good[n]
                    outputs.append(
                        self._shadow_output(
                            frames[i], results[n], found, (champion_ms, candidate_ms), inbounds[i]
                        )
                    )
        if self.drift is not None:
            self.drift.observe(outputs)
        return outputs

    def _shadow_output(
        self,
        frame: CartFrame,
        champion: FrameDetections,
        candidate: FrameDetections,
        ms: tuple[float, float],
        inbound: Inbound,
    ) -> Outbound:
        assert self.runtime is not None and self.shadow is not None
        versions = (self.runtime.version, self.shadow.version)
        record: ShadowDetection = {
            "event_id": derived_id("shadow-detection", frame["event_id"], *versions),
            "frame_event_id": frame["event_id"],
            "cart_id": frame["cart_id"],
            "store_id": frame["store_id"],
            "camera_id": frame["camera_id"],
            "capture_time_ms": frame["capture_time_ms"],
            "champion_version": versions[0],
            "candidate_version": versions[1],
            "champion_boxes": _boxes(self.runtime, champion),
            "candidate_boxes": _boxes(self.shadow, candidate),
            "champion_ms": ms[0],
            "candidate_ms": ms[1],
        }
        return Outbound(
            self.topics.detections_shadow,
            frame["cart_id"],
            SHADOW_DETECTION,
            record,
            inbound.traceparent,
        )

    def _outputs(
        self,
        frame: CartFrame,
        found: FrameDetections,
        inbound: Inbound,
        quality: tuple[float, float],
    ) -> list[Outbound]:
        assert self.runtime is not None
        trace = inbound.traceparent
        version = self.runtime.version
        boxes = _boxes(self.runtime, found)
        detection: Detection = {
            "event_id": derived_id("detection", frame["event_id"], version),
            "frame_event_id": frame["event_id"],
            "cart_id": frame["cart_id"],
            "store_id": frame["store_id"],
            "session_id": frame["session_id"],
            "camera_id": frame["camera_id"],
            "frame_sequence": frame["sequence"],
            "capture_time_ms": frame["capture_time_ms"],
            "model_version": version,
            "boxes": boxes,
            "brightness": quality[0],
            "contrast": quality[1],
        }
        # the frame's partition, not the key's hash: reason reads a cart's detections beside its
        # weight packets, which its cart sent to that partition number with its own client's
        # partitioner (librdkafka's default is not Kafka's murmur2 that this producer uses)
        out = [
            Outbound(
                self.topics.detections,
                frame["cart_id"],
                DETECTION,
                detection,
                trace,
                partition=inbound.partition,
            )
        ]
        best = found.best_score
        if boxes and best < self.config.review_below:
            review: ReviewFrame = {
                "event_id": derived_id("review-frame", frame["event_id"], version),
                "frame_event_id": frame["event_id"],
                "cart_id": frame["cart_id"],
                "store_id": frame["store_id"],
                "session_id": frame["session_id"],
                "camera_id": frame["camera_id"],
                "capture_time_ms": frame["capture_time_ms"],
                "model_version": version,
                "reason": f"best score {best:.2f} below {self.config.review_below:.2f}",
                "best_score": best,
                "boxes": boxes,
                "jpeg": frame["jpeg"],
            }
            out.append(
                Outbound(self.topics.review_frames, frame["cart_id"], REVIEW_FRAME, review, trace)
            )
        return out

    def needs_tick(self, state: None, now_ms: int) -> bool:
        return False

    def tick(self, state: None, now_ms: int) -> Result[None]:
        return Result(None)


def _boxes(runtime: Detector, found: FrameDetections) -> list[DetectionBox]:
    skus = runtime.skus
    return [
        {
            "sku": skus[int(c)],
            "score": float(s),
            "x0": float(b[0]),
            "y0": float(b[1]),
            "x1": float(b[2]),
            "y1": float(b[3]),
        }
        for c, s, b in zip(found.classes, found.scores, found.boxes, strict=True)
    ]


def shadowed(frame_event_id: str, share: float) -> bool:
    """Whether the shadow model sees this frame: a fixed share of frames, chosen by a hash of
    the frame's id, so a re-delivered frame is chosen again (or not) the same way."""
    digest = hashlib.blake2b(frame_event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 2**64
