"""A Kafka client that starts while no broker answers waits for one (faust_compat/broker_wait.py),
and gives up with a clear error when none comes in `kafka.startup_wait_s`."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from cartstream.services.kafka.broker import EmbeddedBroker, free_port
from cartstream.streams.runtime.faust_compat.broker_wait import wait_for_broker_on_bootstrap


@pytest.fixture
def waits() -> Iterator[None]:
    """The wait is process-wide: put back what was there after the test."""
    before = wait_for_broker_on_bootstrap(0.0)
    yield
    wait_for_broker_on_bootstrap(before)


async def _produce_one(bootstrap: str) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait("broker.wait.probe", b"x")
        return int(sent.offset)
    finally:
        await producer.stop()


def test_a_client_started_before_the_broker_comes_up_waits_for_it(waits: None) -> None:
    port = free_port()
    broker = EmbeddedBroker(port)
    later = threading.Timer(3.0, broker.start)
    wait_for_broker_on_bootstrap(60.0)
    started = time.monotonic()
    later.start()
    try:
        offset = asyncio.run(_produce_one(f"127.0.0.1:{port}"))
    finally:
        later.join()
        broker.stop()
    assert offset == 0
    assert time.monotonic() - started >= 3.0  # it really did start before the broker


def test_without_a_broker_the_client_gives_up_after_the_wait(waits: None) -> None:
    wait_for_broker_on_bootstrap(2.0)
    started = time.monotonic()
    with pytest.raises(KafkaConnectionError, match=r"kafka\.startup_wait_s"):
        asyncio.run(_produce_one(f"127.0.0.1:{free_port()}"))
    assert 2.0 <= time.monotonic() - started < 15.0
