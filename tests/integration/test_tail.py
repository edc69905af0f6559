"""A finite read of a topic (the verifier's, the bench's, `checkouts tail`'s) returns every record
the topic held when it began, however slowly the broker serves them."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from kafka import KafkaProducer

from cartstream.core.settings import KafkaSettings, Settings
from cartstream.services.kafka.broker import EmbeddedBroker, free_port
from cartstream.services.kafka.tail import read_messages
from cartstream.services.tools.chaos.proxy import FaultProxy

RECORDS = 12
VALUE = b"x" * 900_000  # about one record per fetch: the read is still going when the cut comes


@pytest.fixture
def proxied() -> Iterator[tuple[Settings, FaultProxy]]:
    port = free_port()
    proxy = FaultProxy(port, name="broker").start()
    try:
        with EmbeddedBroker(port, advertised_port=proxy.port):
            yield Settings(kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{proxy.port}")), proxy
    finally:
        proxy.close()


def test_a_finite_read_outlasts_a_broker_that_stops_answering(
    proxied: tuple[Settings, FaultProxy],
) -> None:
    settings, proxy = proxied
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_list, max_request_size=2_000_000
    )
    for i in range(RECORDS):
        producer.send("slow.topic", key=str(i).encode(), value=VALUE, partition=0)
    producer.flush()
    producer.close()

    seen = []
    for msg in read_messages(settings, "slow.topic", idle_timeout_s=1.0):
        seen.append(msg.offset)
        if len(seen) == 2:  # mid-read: the broker goes silent for 4 idle timeouts
            proxy.set_mode("blackhole")
            threading.Timer(4.0, proxy.set_mode, ("pass",)).start()
    assert sorted(seen) == list(range(RECORDS))


LONG_PARTITION = 30_000  # one-record batches: past what a 20 ms fetch of Tansu's memory store scans


def test_a_finite_read_under_the_tansu_profile_reads_a_partition_of_many_batches(
    broker: EmbeddedBroker,
) -> None:
    """Tansu scans a partition's batches on every fetch (about 1 us each) and answers nothing if
    the fetch's wait ends first: a reader with the profile's 20 ms got nothing at 25 000 batches.
    A reading tool waits `reader_fetch_wait_ms` instead."""
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=broker.bootstrap), broker_profile="tansu"
    )
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, batch_size=1, linger_ms=0)
    for i in range(LONG_PARTITION):
        producer.send("long.topic", value=i.to_bytes(4, "big"), partition=0)
        if i % 2000 == 1999:
            producer.flush()
    producer.flush()
    producer.close()
    offsets = [m.offset for m in read_messages(settings, "long.topic", idle_timeout_s=1.0)]
    assert offsets == list(range(LONG_PARTITION))
