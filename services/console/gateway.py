"""The push gateway: one Kafka consumer for the whole console, fanned out to browsers and carts.

A thread reads `basket.changes`, `anomalies`, `checkouts` and `cart.review-frames` (no consumer
group: every console replica sees everything) and hands each record to the event loop, which
keeps the store view (active carts, recent alerts, unsure frames per store) and puts an event
on every subscriber's queue that wants it: a cart screen follows one cart, a store page one
store (None: every store, an admin). Invariants:
- one consumer however many carts and pages are watching (never one per cart);
- a slow subscriber loses its oldest events (bounded queue), never stalls the others;
- the store view only grows from records; nothing here writes to Kafka or the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.exceptions import DecodeError
from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import STEP_ACTIONS

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
RECENT_ALERTS = 200


@dataclass
class CartSeen:
    """What the console knows of a cart from the stream (its live basket comes from a worker)."""

    cart_id: str
    store_id: str
    session_id: str
    status: str = "shopping"
    changes: int = 0
    last_ms: int = 0
    alerts: int = 0


@dataclass(eq=False)  # each subscriber is itself (hashable by identity)
class Subscriber:
    cart_id: str | None = None
    store_id: str | None = None  # None with cart_id None: every store
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))

    def wants(self, event: dict[str, Any]) -> bool:
        if self.cart_id is not None:
            return bool(event.get("cart_id") == self.cart_id)
        return self.store_id is None or event.get("store_id") == self.store_id

    def offer(self, event: dict[str, Any]) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(event)


class BasketGateway:
    def __init__(self, settings: Settings, codec: AvroCodec | None = None) -> None:
        self.settings = settings
        self.codec = codec or AvroCodec()
        t = settings.topics
        self.topics = [t.basket_changes, t.anomalies, t.checkouts, t.review_frames]
        self.carts: dict[str, CartSeen] = {}
        self.alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)
        self.unsure: dict[str, deque[dict[str, Any]]] = {}
        self.subscribers: set[Subscriber] = set()
        self.records = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()  # assigned and positioned: events from now on are seen

    # -- life cycle ------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._consume, name="console-gateway", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def stopping(self) -> bool:
        """Stopped or stopping: its subscribers' streams end."""
        return self._stop.is_set()

    def _consume(self) -> None:
        consumer = KafkaConsumer(
            **self.settings.kafka.kafka_python_config(),
            enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.tuning.fetch_max_wait_ms or 100,
            consumer_timeout_ms=200,
        )
        try:
            tps = self._assign(consumer)
            if self.settings.console.replay:
                consumer.seek_to_beginning(*tps)
            else:
                consumer.seek_to_end(*tps)
                for tp in tps:
                    consumer.position(tp)  # resolve now: what comes after start is seen
            self.ready.set()
            while not self._stop.is_set():
                for messages in consumer.poll(timeout_ms=200).values():
                    for msg in messages:
                        self._received(msg.topic, msg.value)
        except Exception:
            log.exception("console gateway: the consumer stopped")
            raise
        finally:
            consumer.close()

    def _assign(self, consumer: KafkaConsumer) -> list[TopicPartition]:
        tps: list[TopicPartition] = []
        for topic in self.topics:
            partitions = None
            for _ in range(75):  # the topics may be created moments after the console starts
                partitions = consumer.partitions_for_topic(topic)
                if partitions or self._stop.wait(0.2):
                    break
            tps += [TopicPartition(topic, p) for p in sorted(partitions or [])]
        consumer.assign(tps)
        return tps

    def _received(self, topic: str, value: bytes | None) -> None:
        if value is None:
            return
        try:
            record = self.codec.decode(value)
        except DecodeError as exc:
            log.warning("console gateway: %s record skipped: %s", topic, exc)
            return
        received = now_ms()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.apply, topic, record, received)

    # -- on the event loop -------------------------------------------------------------------

    def apply(self, topic: str, record: dict[str, Any], received_ms: int) -> None:
        """Fold one record into the store view and push its event (on the event loop)."""
        self.records += 1
        t = self.settings.topics
        if topic == t.review_frames:
            self._unsure_frame(record)
            return
        event = self._event(topic, record, received_ms)
        for sub in list(self.subscribers):
            if sub.wants(event):
                sub.offer(event)

    def _event(self, topic: str, record: dict[str, Any], received_ms: int) -> dict[str, Any]:
        t = self.settings.topics
        cart = self.carts.get(record["cart_id"])
        if cart is None or cart.session_id != record["session_id"]:
            cart = CartSeen(record["cart_id"], record["store_id"], record["session_id"])
            self.carts[cart.cart_id] = cart
        base = {
            "cart_id": record["cart_id"],
            "store_id": record["store_id"],
            "session_id": record["session_id"],
            "gateway_ms": received_ms,
        }
        if topic == t.basket_changes:
            cart.changes += 1
            cart.last_ms = max(cart.last_ms, int(record["step_end_ms"]))
            if record["action"] not in STEP_ACTIONS:
                cart.status = (
                    "checking_out" if record["action"] == "CHECKOUT_REQUESTED" else "closed"
                )
            return {
                "type": "change",
                **base,
                **{
                    k: record[k]
                    for k in ("seq", "action", "sku", "quantity", "confidence", "step_end_ms")
                },
                "published_ms": record["published_ms"],
                "source_produced_ms": record["source_produced_ms"],
            }
        if topic == t.anomalies:
            cart.alerts += 1
            alert = {
                "type": "alert",
                **base,
                **{k: record[k] for k in ("anomaly_id", "kind", "severity", "description")},
                "detected_ms": record["detected_ms"],
            }
            self.alerts.appendleft(alert)
            return alert
        cart.status = "checked_out"
        return {
            "type": "checkout",
            **base,
            **{k: record[k] for k in ("checkout_id", "status", "item_count", "subtotal_cents")},
        }

    def _unsure_frame(self, record: dict[str, Any]) -> None:
        store = str(record["store_id"])
        frames = self.unsure.setdefault(
            store, deque(maxlen=self.settings.console.unsure_frames_per_store)
        )
        frames.appendleft(record)

    def subscribe(self, cart_id: str | None = None, store_id: str | None = None) -> Subscriber:
        sub = Subscriber(cart_id=cart_id, store_id=store_id)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def carts_of(self, store_id: str | None) -> list[CartSeen]:
        carts = [c for c in self.carts.values() if store_id is None or c.store_id == store_id]
        return sorted(carts, key=lambda c: (c.status != "shopping", -c.last_ms, c.cart_id))

    def alerts_of(self, store_id: str | None) -> list[dict[str, Any]]:
        return [a for a in self.alerts if store_id is None or a["store_id"] == store_id]

    def unsure_frames(self, store_id: str | None) -> list[dict[str, Any]]:
        stores = [store_id] if store_id is not None else sorted(self.unsure)
        return [f for s in stores for f in self.unsure.get(s, ())]

    def unsure_frame(self, frame_event_id: str) -> dict[str, Any] | None:
        for frames in self.unsure.values():
            for f in frames:
                if f["frame_event_id"] == frame_event_id:
                    return f
        return None
