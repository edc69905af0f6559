"""Publishing staff decisions on `checkout.decisions` (persist writes them to the database).

The record is built by `models.decision.decide`; here it is encoded with the published schema
and sent with acks from every in-sync replica before the console answers, so an answered
decision is never lost. A decision sent twice (a resubmitted form) carries the same id, which
persist dedupes.
"""

from __future__ import annotations

from kafka import KafkaProducer

from cartstream.core.settings import Settings
from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import CHECKOUT_DECISION, CheckoutDecision


class DecisionPublisher:
    def __init__(self, settings: Settings, codec: AvroCodec | None = None) -> None:
        self.topic = settings.topics.checkout_decisions
        self.codec = codec or AvroCodec()
        self.producer = KafkaProducer(
            **settings.kafka.kafka_python_config(),
            acks="all",
            retries=5,
            max_in_flight_requests_per_connection=1,
            enable_idempotence=settings.tuning.producer_idempotence,
            request_timeout_ms=5_000,
            max_block_ms=5_000,
        )

    def publish(self, decision: CheckoutDecision, timeout_s: float = 10.0) -> None:
        """Send and wait for the broker's acknowledgement (blocking: run in a thread)."""
        value = self.codec.encode(CHECKOUT_DECISION, decision)
        future = self.producer.send(
            self.topic,
            key=decision["cart_id"].encode(),
            value=value,
            headers=self.codec.headers(CHECKOUT_DECISION),
        )
        future.get(timeout=timeout_s)

    def close(self) -> None:
        self.producer.close(timeout=5)
