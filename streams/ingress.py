"""What an input must pass before a stage reads it: on the cart topics, the cart's signature
(core/cart_auth.py); then decoding and validation (deadletter.py).

Authentication runs in the mode the store chose (`settings.cart_auth.mode`):
- `enforce`: a record that fails is dead-lettered (error type AUTH, reason `auth: ...`), never
  decoded, and raises a SPOOFED_EVENT alert;
- `report`: the alert only; the record goes on (while carts are being given keys);
- `off`: nothing is checked.
A signed record whose body names another cart than the one that signed it fails the same way.
Every failure is counted (`cartstream.auth.failures`). Alerts and letters derive their ids
from the record's position, so a re-delivery repeats them, never adds new ones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cartstream.core.cart_auth import Authentic, AuthFailure, Keyring, Verifier
from cartstream.core.ids import claimed_id, derived_id
from cartstream.core.metrics import instruments, reason_label
from cartstream.core.settings import Settings
from cartstream.schemas.codec import SCHEMA_HEADER, AvroCodec
from cartstream.schemas.records import ANOMALY, DEAD_LETTER, Anomaly
from cartstream.streams.deadletter import dead_letter, decode_for_stage
from cartstream.streams.stage import Inbound, Outbound, Sink, Stage

log = logging.getLogger(__name__)

AUTH_ERROR = "AUTH"


@dataclass(frozen=True)
class Admitted:
    """The decoded record the stage may act on (None: it must not), and what to publish first
    (a dead letter, an alert)."""

    record: Mapping[str, Any] | None
    outputs: list[Outbound] = field(default_factory=list)


def verifier_for(settings: Settings) -> Verifier | None:
    auth = settings.cart_auth
    if auth.mode == "off":
        return None
    keyring = Keyring(auth.master_key_bytes(), auth.revoked_key_ids)
    return Verifier(keyring, auth.max_age_s, auth.max_skew_s)


class Ingress:
    """The gate in front of one stage (or sink)."""

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        node: Stage[Any] | Sink,
        verifier: Verifier | None = None,
    ) -> None:
        self.node = node
        self.codec = codec
        self.mode = settings.cart_auth.mode
        self.verifier = verifier if verifier is not None else verifier_for(settings)
        t = settings.topics
        self.signed_topics = frozenset({t.frames, t.weights, t.sessions}) & set(node.inputs())
        self.dead_letters, self.anomalies = t.dead_letters, t.anomalies

    def admit(self, inbound: Inbound, value: bytes, now_ms: int) -> Admitted:
        failure: str | None = None
        authentic: Authentic | None = None
        if self.verifier is not None and inbound.topic in self.signed_topics:
            try:
                authentic = self.verifier.verify(
                    inbound.topic,
                    inbound.partition,
                    inbound.offset,
                    inbound.key,
                    value,
                    inbound.headers,
                    inbound.timestamp_ms,
                    inbound.headers.get(SCHEMA_HEADER, b""),
                )
            except AuthFailure as exc:
                failure = exc.reason
                if self.mode == "enforce":
                    return Admitted(None, self._refuse(inbound, value, failure, now_ms))
        decoded = decode_for_stage(self.node, self.codec, inbound, value, now_ms, self.dead_letters)
        if isinstance(decoded, Outbound):
            alerts = self._refuse(inbound, value, failure, now_ms) if failure else []
            return Admitted(None, [*alerts, decoded])
        if authentic is not None and decoded.get("cart_id") != authentic.cart_id:
            named = decoded.get("cart_id")
            failure = f"the record names cart {named!r}, signed for {authentic.cart_id!r}"
            if self.mode == "enforce":
                return Admitted(None, self._refuse(inbound, value, failure, now_ms))
        if failure is None:
            return Admitted(decoded)
        return Admitted(decoded, self._refuse(inbound, value, failure, now_ms, decoded))

    def _refuse(
        self,
        inbound: Inbound,
        value: bytes,
        why: str,
        now_ms: int,
        record: Mapping[str, Any] | None = None,
    ) -> list[Outbound]:
        reason = f"auth: {why}"
        claimed = claimed_id(inbound.key)
        log.warning(
            "%s: %s[%d]@%d from cart %r failed authentication (%s): %s",
            self.node.name,
            inbound.topic,
            inbound.partition,
            inbound.offset,
            claimed,
            self.mode,
            why,
        )
        instruments().auth_failures.add(
            1,
            {
                "stage": self.node.name,
                "topic": inbound.topic,
                "mode": self.mode,
                "reason": reason_label(why),
            },
        )
        alert = spoofed_event(inbound, claimed, reason, now_ms, record)
        outputs = [Outbound(self.anomalies, claimed, ANOMALY, alert)]
        if self.mode == "enforce":
            letter = dead_letter(self.node.name, inbound, value, AUTH_ERROR, reason, now_ms)
            outputs.append(Outbound(self.dead_letters, claimed, DEAD_LETTER, letter))
        return outputs


def spoofed_event(
    inbound: Inbound,
    claimed_cart: str,
    reason: str,
    now_ms: int,
    record: Mapping[str, Any] | None = None,
) -> Anomaly:
    """The SPOOFED_EVENT alert for a record that failed authentication. Its store and session
    are the record's when it could be read after all (report mode), else empty."""
    body = record or {}
    return {
        "anomaly_id": derived_id(
            "anomaly", "SPOOFED_EVENT", inbound.topic, inbound.partition, inbound.offset
        ),
        "kind": "SPOOFED_EVENT",
        "severity": "CRITICAL",
        "cart_id": claimed_cart,
        "store_id": claimed_id(str(body.get("store_id") or "").encode(errors="replace")),
        "session_id": claimed_id(str(body.get("session_id") or "").encode(errors="replace")),
        "detected_ms": now_ms,
        "description": f"{inbound.topic}[{inbound.partition}]@{inbound.offset}: {reason}",
        "basket_change_ids": [],
        "frame_event_ids": [],
        "weight_from_ms": None,
        "weight_to_ms": None,
        "grams_measured": None,
        "grams_expected": None,
    }
