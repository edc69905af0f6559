"""The cart's producer library: Avro-encode, key by cart, stamp ids and trace context, and never
lose an event when the Wi-Fi drops.

    client = CartClient(settings, spool_dir=Path("/var/lib/cart/spool"))
    client.send(settings.topics.weights, cart_id, WEIGHT_PACKET, packet)
    ...
    client.close()  # waits for the spool to drain

`send` appends to the on-disk spool and returns at once. A sender thread forwards spooled events
to Kafka in order and advances the spool's cursor only after the broker acknowledged them. While
the broker is unreachable events pile up on disk; when it comes back they are replayed in the
order they were produced. A batch that fails is re-sent from its first event, so the broker may
see an event twice: consumers dedupe on the `event-id` header / record field. `on_delivered`
hears where the broker put each event (the chaos verifier's lost-write check keeps that ledger).

With cart keys configured, every record is signed as it is sent (core/cart_auth.py): the
signing time and counter are those of the send, so a spool drained after an outage is fresh
and a re-sent batch carries new counters, never a replayed one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from opentelemetry.trace import SpanKind

from cartstream.core.broker_check import check_tls
from cartstream.core.cart_auth import CartSigner, Keyring
from cartstream.core.ids import EVENT_ID_HEADER, TRACEPARENT
from cartstream.core.settings import Settings
from cartstream.core.telemetry import (
    current_traceparent,
    message_span,
    record_attributes,
    setup_tracing,
)
from cartstream.exceptions import ConfigurationError
from cartstream.schemas.codec import SCHEMA_HEADER, AvroCodec
from cartstream.services.carts.spool import Spool, SpoolRecord

log = logging.getLogger(__name__)

ProducerFactory = Callable[[], Any]
# (the record, the partition and offset the broker acknowledged it at): told once per delivery
Delivered = Callable[[SpoolRecord, int, int], None]
SignerOf = Callable[[str], CartSigner | None]  # cart id -> its signer (None: send unsigned)


def signers_from(settings: Settings) -> SignerOf:
    """A real cart's own key (`cart_auth.cart_key`): its records are signed, another cart's
    cannot be. Else signers derived from the store's master keys with the active key id, one
    per cart (the simulator plays every cart). Neither configured: records go unsigned."""
    auth = settings.cart_auth
    key_id = auth.active_key_id
    if auth.cart_key is not None and auth.cart_id is not None and key_id is not None:
        own = CartSigner(auth.cart_id, key_id, bytes.fromhex(auth.cart_key.get_secret_value()))
        return lambda cart_id: own if cart_id == own.cart_id else None
    if key_id is None:
        return lambda cart_id: None
    return Keyring(auth.master_key_bytes()).fleet(key_id)


class CartClient:
    def __init__(
        self,
        settings: Settings,
        spool_dir: Path,
        codec: AvroCodec | None = None,
        batch_size: int = 500,
        producer_factory: ProducerFactory | None = None,
        fsync: bool = False,
        signer_of: SignerOf | None = None,
        on_delivered: Delivered | None = None,
    ) -> None:
        setup_tracing(settings, component="cart")
        self.settings = settings
        self.codec = codec or AvroCodec()
        self.spool = Spool(spool_dir, fsync=fsync)
        self.batch_size = batch_size
        self._factory = producer_factory or self._default_producer
        self._signer_of = signer_of or signers_from(settings)
        self._on_delivered = on_delivered
        self._producer: Any = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.delivered = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._sender, name="cart-sender", daemon=True)
        self._thread.start()

    def _default_producer(self) -> KafkaProducer:
        return KafkaProducer(
            **self.settings.kafka.kafka_python_config(),
            acks="all",
            retries=5,
            max_in_flight_requests_per_connection=1,
            enable_idempotence=self.settings.tuning.producer_idempotence,
            linger_ms=5,
            request_timeout_ms=5_000,
            max_block_ms=5_000,
            reconnect_backoff_max_ms=1_000,
        )

    # -- producing -------------------------------------------------------------------------

    def send(self, topic: str, key: str, schema: str, record: dict[str, Any]) -> int:
        """Spool one event; returns its spool index. Never blocks on the network."""
        value = self.codec.encode(schema, record)
        attributes = {
            "messaging.kafka.message.key": key,
            "messaging.message.id": str(record["event_id"]),
            "cartstream.stage": "cart",
            **record_attributes(record),
        }
        with message_span("send", topic, kind=SpanKind.PRODUCER, attributes=attributes):
            trace = current_traceparent()
        headers = [*self.codec.headers(schema), (EVENT_ID_HEADER, str(record["event_id"]).encode())]
        if trace:
            headers.append((TRACEPARENT, trace))
        index = self.spool.append(SpoolRecord(topic, key.encode(), value, tuple(headers)))
        self._wake.set()
        return index

    def pending(self) -> int:
        return self.spool.pending()

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until every spooled event reached the broker; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.spool.pending() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        return self.spool.pending() == 0

    def close(self, timeout_s: float = 60.0) -> bool:
        """Drain (up to `timeout_s`), stop the sender; what is left stays spooled for next time."""
        drained = self.flush(timeout_s)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        if self._producer is not None:
            self._producer.close(timeout=5)
        self.spool.close()
        return drained

    # -- the sender thread -----------------------------------------------------------------

    def _sender(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            batch = self.spool.read(self.batch_size)
            if not batch:
                self._wake.wait(0.2)
                self._wake.clear()
                continue
            if self._send_batch(batch):
                self.spool.ack(batch[-1][0])
                self.delivered += len(batch)
                backoff = 0.1
            else:
                self.failures += 1
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def _send_batch(self, batch: list[tuple[int, SpoolRecord]]) -> bool:
        try:
            if self._producer is None:
                problem = self._tls_problem()
                if problem:  # a configuration error: say so now, keep the events spooled
                    log.error("cart sender: %s; %d events spooled", problem, self.spool.pending())
                    return False
                self._producer = self._factory()
            futures = [
                self._producer.send(r.topic, key=r.key, value=r.value, headers=self._headers(r))
                for _, r in batch
            ]
            self._producer.flush(timeout=15)
            acks = [fut.get(timeout=0) for fut in futures]
            if self._on_delivered is not None:
                for (_, record), ack in zip(batch, acks, strict=True):
                    self._on_delivered(record, ack.partition, ack.offset)
            return True
        except (KafkaError, OSError, AssertionError) as exc:
            log.warning(
                "cart sender: broker unavailable (%s); %d events spooled",
                type(exc).__name__,
                self.spool.pending(),
            )
            self._reset_producer()
            return False

    def _tls_problem(self) -> str:
        """Why TLS fails, when it does (a wrong CA looks like a broker that is down)."""
        try:
            check_tls(self.settings)
        except ConfigurationError as exc:
            return str(exc)
        return ""

    def _headers(self, record: SpoolRecord) -> list[tuple[str, bytes]]:
        headers = list(record.headers)
        signer = self._signer_of(record.key.decode())
        if signer is not None:
            schema = dict(headers).get(SCHEMA_HEADER, b"")
            headers += signer.headers(record.topic, record.key, record.value, schema)
        return headers

    def _reset_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:  # closing a broken producer must not kill the sender
                log.debug("cart sender: producer close failed", exc_info=True)
