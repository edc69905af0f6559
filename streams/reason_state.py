"""What reason keeps per shopper session (its table's value), and how old states are read.

Version history (each stored state carries its version):
- 0: before versions; the oldest lack `steps`, `vision` and `packets` (reasoning by weight
  only), sightings of 6 fields and steps without `packet_traces` (before tracing). The defaults
  below fill all of these in, so version 0 needs no upgrade step.
- 1: these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from cartstream.models.basket import Basket
from cartstream.models.weighing import SettleState
from cartstream.schemas.records import ClosingAction
from cartstream.streams.evidence import FrameLedger
from cartstream.streams.state import StateCodec

VERSION = 1


class PacketTrace(NamedTuple):
    """A recent weight packet's time span and trace context (stored as a JSON list)."""

    start_ms: int
    end_ms: int
    traceparent: str


@dataclass
class PendingStep:
    """A settled weight step waiting for the detections of the frames sent before it."""

    start_ms: int
    end_ms: int
    delta_g: float
    sigma_g: float
    level_after_g: float
    barrier: int  # the last frame the cart sent before the step's completing packet
    source_event_id: str  # that packet
    produced_ms: int
    received_ms: int
    # the change carries the trace of the packet that completed its step, whichever input (a
    # detection, a tick) lets it be decided ...
    traceparent: str
    # ... and links to the other packets the step's samples came in
    packet_traces: list[str] = field(default_factory=list)


@dataclass
class PendingClose:
    """A checkout request or abandonment waiting for the last weight packet before it."""

    kind: ClosingAction
    event_id: str
    time_ms: int
    last_weight_sequence: int
    produced_ms: int
    received_ms: int
    traceparent: str


@dataclass
class ReasonState:
    cart_id: str
    store_id: str
    session_id: str
    settle: SettleState = field(default_factory=SettleState)
    last_seq: int = -1  # the last weight packet applied (re-deliveries are skipped)
    gaps: int = 0  # weight packets that never came
    next_change: int = 0  # the next basket change's number
    basket: Basket = field(default_factory=Basket)
    steps: list[PendingStep] = field(default_factory=list)
    vision: FrameLedger = field(default_factory=FrameLedger)
    packets: list[PacketTrace] = field(default_factory=list)  # the latest weight packets
    pending: PendingClose | None = None
    closed_ms: int | None = None
    version: int = VERSION


CODEC = StateCodec(ReasonState, VERSION)
