"""Hostile input at volume, written by a foreign producer (librdkafka through confluent-kafka,
not the project's own client) to every input topic while honest carts shop.

Every record carries a `fuzz-id` and a `fuzz-kind` header (dead letters keep the original
headers), so the verifier can match each one to its dead letter. Kinds:

- malformed: random bytes, truncated Avro, an unknown schema fingerprint, Confluent-framed
  values, JSON, empty values, values of several MB; null and garbage keys, and keys of text
  holding NUL and other control characters (bytes Postgres refuses in a text column: a
  SPOOFED_EVENT alert once carried such a key into a row and persist crash-looped);
- valid Avro with hostile contents: NaN, infinite or negative grams, timestamps far in the
  future or past, sequence jumps of 2^62, ids holding NUL;
- valid Avro that must be harmless: unknown carts and stores, duplicated and out-of-order
  session events;
- a flood of 10 000 frames from one cart within one second, signed with that cart's key when
  the store has cart keys (a compromised cart: unsigned, the flood stops at authentication):
  beyond the camera's burst each is dead-lettered for its rate; the verifier counts the frames
  without a dead letter (the burst, detected, per worker process that read them:
  `flood_unlettered`).

With cart signatures enforced, every other hostile record on a cart topic is unsigned and is
dead-lettered for that (error type AUTH) with a SPOOFED_EVENT alert naming its key, encoded
when the key is not a valid id.

Fuzz carts and sessions are named `fuzz-*`, so honest sessions are never addressed.
"""

from __future__ import annotations

import json
import random
import struct
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cartstream.core.cart_auth import Keyring
from cartstream.core.settings import Settings
from cartstream.models.render import encode_jpeg
from cartstream.schemas.codec import MAGIC, AvroCodec
from cartstream.schemas.records import CART_FRAME, SESSION_EVENT, WEIGHT_PACKET

FUZZ_PREFIX = "fuzz-"
FLOOD_CART = "fuzz-flood"
FLOOD_FRAMES = 10_000
HUGE_EVERY = 500  # records per value of several MB
# kinds that must each end as a dead letter; the rest must be harmless
DEAD_LETTER_KINDS = (
    "random_bytes",
    "truncated_avro",
    "unknown_fingerprint",
    "confluent_framed",
    "json",
    "empty",
    "huge",
    "nan_grams",
    "infinite_grams",
    "negative_grams",
    "future_time",
    "ancient_time",
    "sequence_jump",
    "nul_ids",
)
HARMLESS_KINDS = ("unknown_cart", "duplicate_session_event", "out_of_order_session_event")


@dataclass(frozen=True)
class Hostile:
    topic: str
    key: bytes | None
    value: bytes | None
    kind: str


class HostileInput:
    """A seeded stream of hostile records for the cart input topics and the internal ones."""

    def __init__(self, settings: Settings, seed: int) -> None:
        self.t = settings.topics
        self.rng = random.Random(seed)
        self.codec = AvroCodec()
        self.jpeg = encode_jpeg(np.zeros((8, 8, 3), dtype=np.uint8))
        self.inputs = [
            self.t.frames,
            self.t.weights,
            self.t.sessions,
            self.t.detections,
            self.t.basket_changes,
            self.t.reviews,
            self.t.checkouts,
            self.t.anomalies,
        ]

    def records(self, n: int) -> Iterator[Hostile]:
        """Every kind in turn, except values of several MB: one in `HUGE_EVERY` (a broker keeps
        each; one in 19 of 100 000 records held 16 GB in the embedded broker's memory)."""
        kinds = [k for k in (*DEAD_LETTER_KINDS, *HARMLESS_KINDS) if k != "huge"]
        for i in range(n):
            huge = i % HUGE_EVERY == HUGE_EVERY // 2
            yield self.make("huge" if huge else kinds[i % len(kinds)], i)

    def make(self, kind: str, i: int) -> Hostile:
        rng = self.rng
        topic = rng.choice(self.inputs)
        key = self._key(i)
        now = int(time.time() * 1000)
        good = self._packet(i, now)
        packet = self.codec.encode(WEIGHT_PACKET, good)
        if kind == "random_bytes":
            return Hostile(topic, key, rng.randbytes(rng.randrange(1, 512)), kind)
        if kind == "truncated_avro":
            return Hostile(self.t.weights, key, packet[: rng.randrange(11, len(packet) - 1)], kind)
        if kind == "unknown_fingerprint":
            return Hostile(topic, key, MAGIC + rng.randbytes(8) + packet[10:], kind)
        if kind == "confluent_framed":
            return Hostile(topic, key, b"\x00" + struct.pack(">I", 7) + packet[10:], kind)
        if kind == "json":
            return Hostile(topic, key, json.dumps({"cart_id": "x", "grams": 1}).encode(), kind)
        if kind == "empty":
            return Hostile(topic, key, b"", kind)
        if kind == "huge":
            frame = self._frame(i, now, jpeg=rng.randbytes(3_000_000))
            return Hostile(self.t.frames, key, self.codec.encode(CART_FRAME, frame), kind)
        if kind in ("nan_grams", "infinite_grams", "negative_grams"):
            bad = {"nan_grams": float("nan"), "infinite_grams": float("inf")}.get(kind, -9000.0)
            record = {**good, "samples_g": [1.0, bad]}
            return Hostile(self.t.weights, key, self.codec.encode(WEIGHT_PACKET, record), kind)
        if kind == "future_time":
            record = {**good, "start_time_ms": now + 10 * 365 * 86_400_000}
            return Hostile(self.t.weights, key, self.codec.encode(WEIGHT_PACKET, record), kind)
        if kind == "ancient_time":
            record = {**good, "start_time_ms": 86_400_000}  # 2 January 1970
            return Hostile(self.t.weights, key, self.codec.encode(WEIGHT_PACKET, record), kind)
        if kind == "sequence_jump":
            record = {**good, "sequence": 2**62}
            return Hostile(self.t.weights, key, self.codec.encode(WEIGHT_PACKET, record), kind)
        if kind == "nul_ids":
            record = {**good, "cart_id": f"{FUZZ_PREFIX}cart\x00{i}", "session_id": "\x00\x01"}
            return Hostile(self.t.weights, key, self.codec.encode(WEIGHT_PACKET, record), kind)
        if kind == "unknown_cart":
            return Hostile(self.t.weights, key, packet, kind)
        event = self._session_event(i, now, kind)
        return Hostile(self.t.sessions, key, self.codec.encode(SESSION_EVENT, event), kind)

    def flood(self, frames: int = FLOOD_FRAMES) -> Iterator[Hostile]:
        """Valid frames from one fuzz cart's camera, as fast as they go, all captured at one
        moment: the detect stage infers the first `detect.frame_burst` and dead-letters the rest
        for their rate (streams/frame_rate.py); the session never closes, so it bills nobody."""
        now = int(time.time() * 1000)
        for i in range(frames):
            frame = self._frame(i, now, cart=FLOOD_CART)
            value = self.codec.encode(CART_FRAME, frame)
            yield Hostile(self.t.frames, FLOOD_CART.encode(), value, "flood")

    # -- pieces -------------------------------------------------------------------------------

    def _key(self, i: int) -> bytes | None:
        roll = self.rng.random()
        if roll < 0.1:
            return None
        if roll < 0.15:
            return self.rng.randbytes(self.rng.randrange(1, 64))  # not UTF-8, most likely
        if roll < 0.2:  # text a database refuses: NUL, escape sequences
            return f"{FUZZ_PREFIX}cart-{i % 97}\x00\x1b[2J{i}".encode()
        return f"{FUZZ_PREFIX}cart-{i % 97}".encode()

    def _ids(self, i: int, cart: str | None = None) -> dict[str, str]:
        return {
            "event_id": f"{FUZZ_PREFIX}{i}",
            "cart_id": cart or f"{FUZZ_PREFIX}cart-{i % 97}",
            "store_id": f"{FUZZ_PREFIX}store",
            "session_id": f"{FUZZ_PREFIX}session-{i % 97}",
        }

    def _packet(self, i: int, now: int) -> dict[str, Any]:
        return {
            **self._ids(i),
            "sequence": i,
            "start_time_ms": now - 2000,
            "sample_rate_hz": 50.0,
            "samples_g": [100.0] * 10,
            "last_frame_sequence": -1,
        }

    def _frame(self, i: int, now: int, jpeg: bytes | None = None, cart: str | None = None) -> Any:
        return {
            **self._ids(i, cart),
            "camera_id": 0,
            "sequence": i,
            "capture_time_ms": now - 1000,
            "width": 8,
            "height": 8,
            "jpeg": self.jpeg if jpeg is None else jpeg,
        }

    def _session_event(self, i: int, now: int, kind: str) -> dict[str, Any]:
        session = f"{FUZZ_PREFIX}session-dup-{i % 11}"
        late = kind == "out_of_order_session_event"
        return {
            **self._ids(i),
            "event_id": f"{FUZZ_PREFIX}dup-{i % 11}" if not late else f"{FUZZ_PREFIX}{i}",
            "session_id": session,
            # out of order: a STARTED after the session's checkout request
            "kind": "STARTED" if late else "CHECKOUT_REQUESTED",
            "time_ms": now - 5000,
            "last_weight_sequence": -1,
            "last_frame_sequence": -1,
        }


class FuzzThread:
    """Sends the hostile records through librdkafka, spread over the run, then the flood."""

    def __init__(
        self,
        settings: Settings,
        records: int,
        seed: int,
        rate: float = 2000.0,
        flood: int = FLOOD_FRAMES,
    ) -> None:
        self.settings, self.records, self.seed, self.rate = settings, records, seed, rate
        self.flood_frames = flood
        self.flood_seconds = 0.0
        self.sent: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # the broker said no (too large, ...)
        self.delivered_ids: dict[str, set[str]] = defaultdict(set)
        self._thread = threading.Thread(target=self._main, name="fuzz", daemon=True)
        auth = settings.cart_auth
        key_id = auth.active_key_id if auth.master_keys else None
        self._flood_signer = (
            Keyring(auth.master_key_bytes()).fleet(key_id)(FLOOD_CART) if key_id else None
        )
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def join(self) -> dict[str, Any]:
        self._thread.join()
        return {
            "sent": dict(self.sent),
            "refused_by_broker": dict(self.refused),
            "flood_frames": self.flood_frames,
            "flood_seconds": round(self.flood_seconds, 2),
            "error": self.error,
        }

    def _main(self) -> None:
        from confluent_kafka import Producer

        producer = Producer(
            {
                "bootstrap.servers": self.settings.kafka.bootstrap_servers,
                "message.max.bytes": 8_000_000,
                "linger.ms": 20,
                "acks": "all",
                "message.timeout.ms": 300_000,  # rides out a broker cut
            }
        )
        source = HostileInput(self.settings, self.seed)
        started = time.monotonic()
        try:
            for n, record in enumerate(source.records(self.records)):
                self._send(producer, record, n)
                if n % 500 == 0:
                    producer.poll(0)
                    ahead = n / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            flood_start = time.monotonic()
            for n, record in enumerate(source.flood(self.flood_frames)):
                self._send(producer, record, self.records + n)
                if n % 1000 == 0:
                    producer.poll(0)
            self.flood_seconds = time.monotonic() - flood_start
            producer.flush(300)
        except Exception as exc:  # reported in the summary
            self.error = f"{type(exc).__name__}: {exc}"

    def _send(self, producer: Any, record: Hostile, n: int) -> None:
        headers = [("fuzz-id", str(n).encode()), ("fuzz-kind", record.kind.encode())]
        signer = self._flood_signer if record.kind == "flood" else None
        if signer is not None and record.key is not None and record.value is not None:
            headers += signer.headers(record.topic, record.key, record.value, b"")

        def delivered(err: Any, _msg: Any) -> None:
            if err is None:
                self.sent[record.kind] += 1
                self.delivered_ids[record.kind].add(str(n))
            else:
                self.refused[record.kind] += 1

        while True:
            try:
                producer.produce(
                    record.topic, record.value, record.key, headers=headers, on_delivery=delivered
                )
                return
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.1)


def unaccounted(lettered: dict[str, set[str]], delivered: dict[str, set[str]]) -> dict[str, int]:
    """Per dead-letter kind, how many delivered hostile records have no dead letter (0: every
    one was lettered with its reason; `lettered`: `lettered_ids`); harmless kinds are not
    expected to be lettered, and the flood is counted apart (`flood_unlettered`)."""
    return {kind: len(delivered.get(kind, set()) - lettered[kind]) for kind in DEAD_LETTER_KINDS}


def flood_unlettered(lettered: dict[str, set[str]], delivered: dict[str, set[str]]) -> int:
    """Flood frames without a dead letter: those the detect stage admitted and detected, the
    camera's burst (again after each restart of the worker that reads the flood's partition:
    its buckets are per process)."""
    return len(delivered.get("flood", set()) - lettered["flood"])


def lettered_ids(settings: Settings) -> dict[str, set[str]]:
    """Per fuzz kind, the fuzz ids that have a dead letter with a reason."""
    from cartstream.services.kafka.tail import read_messages

    lettered: dict[str, set[str]] = defaultdict(set)
    codec = AvroCodec()
    for msg in read_messages(settings, settings.topics.dead_letters, idle_timeout_s=5.0):
        letter = codec.decode(msg.value)
        kind = letter["headers"].get("fuzz-kind")
        if kind is not None and letter["reason"]:
            lettered[bytes(kind).decode()].add(bytes(letter["headers"]["fuzz-id"]).decode())
    return lettered
