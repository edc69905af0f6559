"""`cartstream checkouts tail`: a retailer-side consumer needing only the published .avsc files."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from cartstream.core.broker_check import check_tls
from cartstream.core.settings import Settings
from cartstream.exceptions import BrokerError, DecodeError
from cartstream.schemas.codec import AvroCodec

log = logging.getLogger(__name__)


STALL_S = 120.0  # a finite read with partitions short of their end that long fails


def read_messages(
    settings: Settings,
    topic: str,
    from_beginning: bool = True,
    idle_timeout_s: float | None = 5.0,
    partitions: Sequence[int] | None = None,
    since_ms: int | None = None,
) -> Iterator[Any]:
    """Raw messages of every partition of `topic`, or of `partitions` (no consumer group:
    nothing to join); with `since_ms`, from the first record the broker timestamped then or
    later (a broker without a time index answers offset 0: everything is read, still right).

    A finite read (`idle_timeout_s` set) first reads every partition up to the end offset it
    had when the read began, however slowly the broker serves it (a topic of multi-MB values
    can take longer than any idle timeout per fetch), then stops once none came for
    `idle_timeout_s`. A read that gets nothing for `STALL_S` while short of those ends raises
    `BrokerError` rather than return a silently short answer."""
    check_tls(settings)
    consumer = KafkaConsumer(
        **settings.kafka.kafka_python_config(),
        enable_auto_commit=False,
        consumer_timeout_ms=200,
        fetch_max_wait_ms=settings.tuning.reader_fetch_wait_ms,
    )
    try:
        deadline = time.monotonic() + 15
        found = consumer.partitions_for_topic(topic)
        while not found and time.monotonic() < deadline:
            time.sleep(0.2)
            found = consumer.partitions_for_topic(topic)
        wanted = sorted(found or []) if partitions is None else sorted(partitions)
        tps = [TopicPartition(topic, p) for p in wanted]
        consumer.assign(tps)
        if since_ms is not None:
            _seek_to_time(consumer, tps, since_ms)
        elif from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        ends = consumer.end_offsets(tps) if tps and idle_timeout_s is not None else {}
        unraised = set(ends)  # ListOffsets can answer low (see lag.end_offsets): a fetch cannot
        last = time.monotonic()
        while True:
            batch = consumer.poll(timeout_ms=200)
            for tp in list(unraised):
                high = consumer.highwater(tp)
                if high is not None:
                    ends[tp] = max(ends[tp], high)
                    unraised.discard(tp)
            now = time.monotonic()
            if batch:
                last = now
                for messages in batch.values():
                    yield from messages
                continue
            short = [tp for tp, end in ends.items() if consumer.position(tp) < end]
            if short:
                if now - last > STALL_S:
                    raise BrokerError(
                        f"reading {topic}: nothing for {STALL_S:.0f} s with partitions "
                        + ", ".join(str(tp.partition) for tp in short)
                        + " short of their end offsets"
                    )
                continue
            if idle_timeout_s is not None and now - last > idle_timeout_s:
                return
    finally:
        consumer.close()


def _seek_to_time(consumer: KafkaConsumer, tps: list[TopicPartition], since_ms: int) -> None:
    found = consumer.offsets_for_times(dict.fromkeys(tps, since_ms)) if tps else {}
    for tp in tps:
        at = found.get(tp)
        if at is None:  # nothing that recent: only what comes from now on
            consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, at.offset)


def read_topic(
    settings: Settings,
    topic: str,
    from_beginning: bool = True,
    idle_timeout_s: float | None = 5.0,
    max_records: int | None = None,
    codec: AvroCodec | None = None,
    partitions: Sequence[int] | None = None,
    since_ms: int | None = None,
) -> Iterator[tuple[dict[str, Any], Any]]:
    """Decoded records of every partition of `topic`; what does not decode is logged, skipped."""
    codec = codec or AvroCodec()
    seen = 0
    if max_records is not None and max_records <= 0:
        return
    for msg in read_messages(settings, topic, from_beginning, idle_timeout_s, partitions, since_ms):
        try:
            record = codec.decode(msg.value)
        except DecodeError as exc:
            log.warning("%s[%d]@%d skipped: %s", msg.topic, msg.partition, msg.offset, exc)
            continue
        yield record, msg
        seen += 1
        if max_records is not None and seen >= max_records:
            return


def format_checkout(checkout: dict[str, Any]) -> str:
    lines = [
        f"{checkout['checkout_id']}  {checkout['store_id']}/{checkout['cart_id']}  "
        f"{checkout['status']}  {checkout['item_count']} items  "
        f"{checkout['subtotal_cents'] / 100:.2f} {checkout['currency']}  "
        f"scale {checkout['measured_grams']:.0f} g / expected {checkout['expected_grams']:.0f} g"
    ]
    for item in checkout["items"]:
        unit = "/kg" if item["sold_by_weight"] else ""
        lines.append(
            f"    {item['quantity']:>3} x {item['name']:<40} {item['unit_price_cents'] / 100:>7.2f}"
            f"{unit:<3} {item['grams']:>8.0f} g {item['line_total_cents'] / 100:>8.2f}"
        )
    lines += [f"    review: {r}" for r in checkout["review_reasons"]]
    return "\n".join(lines)


def format_decision(decision: dict[str, Any]) -> str:
    """A staff decision on a checkout (`checkout.decisions`), as a retailer reads it."""
    changed = ", ".join(
        f"{c['sku']} {c['quantity_before']}→{c['quantity_after']}" for c in decision["changes"]
    )
    return (
        f"{decision['checkout_id']}  {decision['store_id']}/{decision['cart_id']}  "
        f"{decision['action']}: {decision['previous_status']} → {decision['final_status']}  "
        f"by {decision['staff']}  {decision['item_count']} items  "
        f"{decision['subtotal_cents'] / 100:.2f} {decision['currency']}"
        + (f"\n    changed: {changed}" if changed else "")
        + (f"\n    note: {decision['note']}" if decision["note"] else "")
    )


def to_json(checkout: dict[str, Any]) -> str:
    return json.dumps(checkout, sort_keys=True)
