"""Reason: settled weight steps + what the cameras saw -> basket changes, per shopper session.

Inputs `cart.weights`, `cart.sessions` and `cart.detections` (co-partitioned by cart). For each
session it keeps the settle detector's state, the last weight packet sequence it applied
(re-delivered or duplicate packets are skipped), the frames' in-hand evidence (see
`evidence.py`), the steps waiting for their frames, and its view of the basket (removals are
matched against it).

A settled step is decided by the fusion posterior (`models/fusion.py`) once the detections of
every frame the cart sent before the step's completing packet are in (or, if some never come,
at a deadline tick `reason.vision_wait_s` after it, sent only once detect has processed the
partition's frames: a lagging detect delays a decision, never changes it). `reason.mode` picks
the evidence: fused (default), vision or weight; weight mode does not wait for frames.

A checkout request or abandonment names the last weight packet the cart sent before it; the
session's closing marker is published on `basket.changes` only after that packet was processed
and every step before it decided, so every change precedes the marker on the same partition. If
the packets never come, the marker goes out after `checkout_wait_s` flagged `incomplete`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

import numpy as np

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.fusion import Fusion, FusionParams, StepEvidence
from cartstream.models.vision_drift import VisionReading
from cartstream.models.weighing import SettleDetector, SettleParams
from cartstream.schemas.records import (
    BASKET_CHANGE,
    DETECTION,
    SESSION_EVENT,
    WEIGHT_PACKET,
    Detection,
    SessionEvent,
    WeightPacket,
)
from cartstream.schemas.validation import validate_session_event, validate_weight_packet
from cartstream.streams.basket_change import new_change
from cartstream.streams.evidence import Window, sighting
from cartstream.streams.reason_state import (
    CODEC,
    PacketTrace,
    PendingClose,
    PendingStep,
    ReasonState,
)
from cartstream.streams.stage import STATE_RETENTION_MS, Inbound, Outbound, Result
from cartstream.streams.vision_watch import VisionWatch

log = logging.getLogger(__name__)

RECENT_PACKETS = 32  # weight packets remembered for their trace contexts (6.4 s at 5 a second)


class ReasonStage:
    stateful = True
    name = "reason"

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        r = settings.reason
        self.detector = SettleDetector(SettleParams.of(r))
        self.mode = r.mode
        if self.mode != "weight" and not settings.detect.enabled:
            log.warning("reason: detection is disabled, so steps are decided by weight alone")
            self.mode = "weight"
        params = FusionParams(max_quantity=r.max_quantity)
        if r.lookalike_share is not None:
            params = replace(params, lookalike_share=r.lookalike_share)
        self.fusion = Fusion(catalog, mode=self.mode, device=r.device, params=params)
        if r.torch_threads:
            self.fusion.limit_cpu_threads(r.torch_threads)
        self.wait_ms = int(r.checkout_wait_s * 1000)
        self.vision_wait_ms = int(r.vision_wait_s * 1000)
        self.topics = settings.topics
        self.vision_watch: VisionWatch | None = None  # vision drift per SKU, from `start`

    def start(self) -> None:
        self.vision_watch = VisionWatch.for_settings(self.settings) if self.uses_vision else None

    def vision_drift_readings(self) -> list[VisionReading]:
        """Vision drift per SKU (for the metrics); none before `start` or without vision."""
        return self.vision_watch.readings() if self.vision_watch is not None else []

    def close(self) -> None:
        return None

    @property
    def uses_vision(self) -> bool:
        return self.mode != "weight"

    def inputs(self) -> Mapping[str, str]:
        topics = {self.topics.weights: WEIGHT_PACKET, self.topics.sessions: SESSION_EVENT}
        if self.uses_vision:
            topics[self.topics.detections] = DETECTION
        return topics

    def validate(self, record: Mapping[str, Any], inbound: Inbound, now_ms: int) -> None:
        skew = self.settings.max_future_skew_s
        if inbound.topic == self.topics.weights:
            validate_weight_packet(cast(WeightPacket, record), now_ms, skew)
        elif inbound.topic == self.topics.sessions:
            validate_session_event(cast(SessionEvent, record), now_ms, skew)
        # detections come from our own detect stage, already validated there

    def state_key(self, record: Mapping[str, Any]) -> str:
        return str(record["session_id"])

    def load_state(self, data: Mapping[str, Any]) -> ReasonState:
        return CODEC.load(data)

    def dump_state(self, state: ReasonState) -> dict[str, Any]:
        return CODEC.dump(state)

    def handle(
        self, state: ReasonState | None, record: Mapping[str, Any], inbound: Inbound, now_ms: int
    ) -> Result[ReasonState]:
        if state is None:
            state = ReasonState(
                str(record["cart_id"]), str(record["store_id"]), str(record["session_id"])
            )
        if state.closed_ms is not None:
            return Result(state)  # late or duplicate input for a finished session
        if inbound.topic == self.topics.weights:
            return self._on_packet(state, cast(WeightPacket, record), inbound, now_ms)
        if inbound.topic == self.topics.detections:
            return self._on_detection(state, cast(Detection, record), inbound, now_ms)
        return self._on_session(state, cast(SessionEvent, record), inbound, now_ms)

    def _on_packet(
        self, state: ReasonState, packet: WeightPacket, inbound: Inbound, now_ms: int
    ) -> Result[ReasonState]:
        seq = packet["sequence"]
        if seq <= state.last_seq:
            return Result(state)  # re-delivery: already applied
        if seq > state.last_seq + 1:
            state.gaps += seq - state.last_seq - 1
            log.warning(
                "session %s: weight packets %d..%d missing",
                packet["session_id"],
                state.last_seq + 1,
                seq - 1,
            )
        steps = self.detector.feed(
            state.settle,
            np.asarray(packet["samples_g"], dtype=np.float64),
            packet["start_time_ms"],
            packet["sample_rate_hz"],
        )
        state.last_seq = seq
        packet_end = packet["start_time_ms"] + round(
            1000 * len(packet["samples_g"]) / packet["sample_rate_hz"]
        )
        trace = (inbound.traceparent or b"").decode()
        recent = PacketTrace(packet["start_time_ms"], packet_end, trace)
        state.packets = [*state.packets, recent][-RECENT_PACKETS:]
        barrier = packet["last_frame_sequence"]  # -1 from a v1 cart (decoded with the default)
        state.steps += [
            PendingStep(
                start_ms=step.start_ms,
                end_ms=step.end_ms,
                delta_g=step.delta_g,
                sigma_g=step.sigma_g,
                level_after_g=step.level_after_g,
                barrier=barrier,
                source_event_id=packet["event_id"],
                produced_ms=inbound.timestamp_ms,
                received_ms=now_ms,
                traceparent=trace,
                packet_traces=self._packet_traces(state, step.start_ms, step.end_ms, trace),
            )
            for step in steps
        ]
        return Result(state, self._settle(state, now_ms))

    def _packet_traces(self, state: ReasonState, start_ms: int, end_ms: int, own: str) -> list[str]:
        since = start_ms - round(self.settings.reason.settle_window_s * 1000)
        return [t for s, e, t in state.packets if t and t != own and e >= since and s <= end_ms]

    def _on_detection(
        self, state: ReasonState, detection: Detection, inbound: Inbound, now_ms: int
    ) -> Result[ReasonState]:
        if not self.uses_vision:
            return Result(state)
        seen = sighting(
            detection,
            self.catalog,
            self.settings.reason.hand_zone_y,
            (inbound.traceparent or b"").decode(),
        )
        if not state.vision.note(detection["frame_sequence"], seen):
            return Result(state)  # re-delivery
        return Result(state, self._settle(state, now_ms))

    def _settle(
        self, state: ReasonState, now_ms: int, force: bool = False, deadline: bool = False
    ) -> list[Outbound]:
        """Decide the steps whose evidence is complete (`deadline`: or that waited long
        enough, at a tick), then close the session if it may."""
        outputs = self._decide_ready(state, now_ms, force, deadline)
        pending = state.pending
        if (
            pending is not None
            and not state.steps
            and state.last_seq >= pending.last_weight_sequence
        ):
            outputs.append(self._close(state, pending, now_ms, incomplete=False))
        return outputs

    def _on_session(
        self, state: ReasonState, event: SessionEvent, inbound: Inbound, now_ms: int
    ) -> Result[ReasonState]:
        kind = event["kind"]
        if kind == "STARTED":
            return Result(state)
        state.pending = PendingClose(
            kind=kind,
            event_id=event["event_id"],
            time_ms=event["time_ms"],
            last_weight_sequence=event["last_weight_sequence"],
            produced_ms=inbound.timestamp_ms,
            received_ms=now_ms,
            traceparent=(inbound.traceparent or b"").decode(),
        )
        return Result(state, self._settle(state, now_ms))

    # -- decisions -----------------------------------------------------------------------

    def upstream(self) -> dict[str, str]:
        """The frames detect turns into inputs: deadlines wait for it (streams/upstream.py)."""
        return {self.topics.frames: "detect"} if self.uses_vision else {}

    def _ready(self, state: ReasonState, step: PendingStep, now_ms: int, deadline: bool) -> bool:
        """Its frames' detections are in; or, at a deadline tick (upstream.py), it waited
        `vision_wait_s`. No input decides without frames (a restart can delay them, issue 38)."""
        return (
            not self.uses_vision
            or state.vision.covers(step.barrier)
            or (deadline and now_ms - step.received_ms >= self.vision_wait_ms)
        )

    def _decide_ready(
        self, state: ReasonState, now_ms: int, force: bool, deadline: bool = False
    ) -> list[Outbound]:
        """Steps in order; each decision updates the basket the next one is judged against."""
        outputs: list[Outbound] = []
        r = self.settings.reason
        vision = state.vision
        while state.steps and (force or self._ready(state, state.steps[0], now_ms, deadline)):
            step = state.steps.pop(0)
            window = None
            blind: list[int] = []
            if self.uses_vision:
                if not vision.covers(step.barrier):
                    log.warning(
                        "session %s: deciding a step without the detections of frames up to %d",
                        state.session_id,
                        step.barrier,
                    )
                window = vision.window(
                    step.start_ms - r.window_before_ms,
                    step.end_ms + r.window_after_ms,
                    len(self.catalog),
                )
                blind = vision.blind_cameras(window)
                vision.forget_before(step.end_ms - r.window_before_ms)
            outputs.append(self._decide(state, step, window, blind, now_ms))
        return outputs

    def _decide(
        self,
        state: ReasonState,
        step: PendingStep,
        window: Window | None,
        blind: list[int],
        now_ms: int,
    ) -> Outbound:
        basket = state.basket
        grams = abs(step.delta_g)
        bags = [(sku, g) for sku, weights in basket.bags.items() for g in weights]
        vision, counts = (window.scores, window.counts) if window is not None else (None, None)
        evidence = StepEvidence(
            step.delta_g, step.sigma_g, vision, dict(basket.units), bags, counts
        )
        seen: dict[str, Any] = {}
        if not self.uses_vision:
            (match,) = self.fusion.decide([evidence])
        else:  # each evidence on its own too, for the anomaly stage: one pass for the three
            match, by_weight, by_vision = self.fusion.decide(
                [evidence] * 3, modes=[self.mode, "weight", "vision"]
            )
            hand = window is not None and window.scores.shape[0] > 0
            seen = {
                "frames_seen": window.frames if window is not None else 0,
                "frames_with_hand": int(window.scores.shape[0]) if window is not None else 0,
                "blind_cameras": blind,
                "vision_sku": by_vision.sku if hand else None,
                "vision_quantity": by_vision.quantity if hand else 0,
                "vision_confidence": by_vision.sku_confidence if hand else 0.0,
                "weight_sku": by_weight.sku,
                "frame_event_ids": list(window.frame_ids) if window is not None else [],
            }
        basket.apply(self.catalog, match.action, match.sku, match.quantity, grams)
        change = new_change(
            state,
            self._next_change(state),
            match.action,
            match.sku,
            match.quantity,
            step_start_ms=step.start_ms,
            step_end_ms=step.end_ms,
            source_event_id=step.source_event_id,
            source_produced_ms=step.produced_ms,
            now_ms=now_ms,
            grams_delta=step.delta_g,
            grams_sigma=step.sigma_g,
            confidence=match.confidence,
            scale_net_grams=step.level_after_g,
            evidence=match.evidence,
            seen=seen,
        )
        if self.vision_watch is not None:
            self.vision_watch.observe(change)
        trace = step.traceparent.encode() or None
        links = [*step.packet_traces, *(window.frame_traces if window is not None else ())]
        return Outbound(
            self.topics.basket_changes,
            state.cart_id,
            BASKET_CHANGE,
            change,
            trace,
            tuple(t.encode() for t in links),
        )

    @staticmethod
    def _next_change(state: ReasonState) -> int:
        seq = state.next_change
        state.next_change = seq + 1
        return seq

    def _close(
        self, state: ReasonState, pending: PendingClose, now_ms: int, incomplete: bool
    ) -> Outbound:
        change = new_change(
            state,
            self._next_change(state),
            pending.kind,
            None,
            0,
            step_start_ms=pending.time_ms,
            step_end_ms=pending.time_ms,
            source_event_id=pending.event_id,
            source_produced_ms=pending.produced_ms,
            now_ms=now_ms,
            scale_net_grams=self.detector.current_level(state.settle),
            incomplete=incomplete or state.gaps > 0,
        )
        state.pending = None
        state.closed_ms = now_ms
        trace = pending.traceparent.encode() or None
        return Outbound(self.topics.basket_changes, state.cart_id, BASKET_CHANGE, change, trace)

    # -- timers --------------------------------------------------------------------------

    def needs_tick(self, state: ReasonState, now_ms: int) -> bool:
        steps = state.steps
        if steps and now_ms - steps[0].received_ms >= self.vision_wait_ms:
            return True
        if state.pending is not None:
            return now_ms - state.pending.received_ms >= self.wait_ms
        return state.closed_ms is not None and now_ms - state.closed_ms >= STATE_RETENTION_MS

    def tick(self, state: ReasonState, now_ms: int) -> Result[ReasonState]:
        pending = state.pending
        if pending is not None and now_ms - pending.received_ms >= self.wait_ms:
            if state.last_seq < pending.last_weight_sequence:
                log.warning(
                    "session %s: closing after %.0f s without weight packet %d",
                    state.session_id,
                    self.wait_ms / 1000,
                    pending.last_weight_sequence,
                )
            outputs = self._decide_ready(state, now_ms, force=True)
            outputs.append(self._close(state, pending, now_ms, incomplete=True))
            return Result(state, outputs)
        if state.steps:
            return Result(state, self._settle(state, now_ms, deadline=True))
        if state.closed_ms is not None and now_ms - state.closed_ms >= STATE_RETENTION_MS:
            return Result(None)
        return Result(state)
