"""The embedded broker's end offsets, and the fetch-based correction table recovery relies on
(faust_compat/broker_workarounds.py), on memory storage and on S3 storage across a kill -9."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cartstream.services.kafka.broker import EmbeddedBroker
from cartstream.services.kafka.durable import LocalS3
from cartstream.streams.runtime.faust_compat.broker_workarounds import fetched_high_watermarks
from tests.topic_batches import create_topic, produce_batches

TOPIC = "offsets.probe"
BATCHES, PER_BATCH = 6, 7  # six batches of seven records on partition 0; partition 1 empty


async def _end_offsets(bootstrap: str) -> tuple[dict[int, int], dict[int, int]]:
    """(ListOffsets' answer, the corrected answer) per partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(TOPIC, p) for p in (0, 1)]
        listed = await consumer.end_offsets(tps)
        fixed = await fetched_high_watermarks(consumer._client, listed)
    finally:
        await consumer.stop()
    return (
        {tp.partition: int(v) for tp, v in listed.items()},
        {tp.partition: int(v or 0) for tp, v in fixed.items()},
    )


def test_batched_records_are_counted_on_memory_storage() -> None:
    with EmbeddedBroker() as broker:
        create_topic(broker.bootstrap, TOPIC, 2)
        asyncio.run(produce_batches(broker.bootstrap, TOPIC, BATCHES, PER_BATCH))
        listed, fixed = asyncio.run(_end_offsets(broker.bootstrap))
    assert listed[0] < BATCHES * PER_BATCH  # the broker's bug, which the correction is for
    assert fixed == {0: BATCHES * PER_BATCH, 1: 0}


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[LocalS3]:
    with LocalS3(tmp_path / "moto.log") as store:
        yield store


def test_end_offsets_are_right_after_a_restart_on_s3_storage(s3: LocalS3, tmp_path: Path) -> None:
    log = tmp_path / "tansu.log"
    broker = EmbeddedBroker(log_path=log, storage=s3.storage, env=s3.broker_env()).start()
    try:
        create_topic(broker.bootstrap, TOPIC, 2)
        asyncio.run(produce_batches(broker.bootstrap, TOPIC, BATCHES, PER_BATCH))
        broker.stop(kill=True)
        broker = EmbeddedBroker(
            broker.port, log_path=log, storage=s3.storage, env=s3.broker_env()
        ).start()
        _, fixed = asyncio.run(_end_offsets(broker.bootstrap))
    finally:
        broker.stop(kill=True)
    assert fixed == {0: BATCHES * PER_BATCH, 1: 0}


def test_the_lag_probe_and_a_finite_read_count_batched_records() -> None:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaTP

    from cartstream.core.settings import KafkaSettings, Settings
    from cartstream.services.kafka.lag import end_offsets
    from cartstream.services.kafka.tail import read_messages

    with EmbeddedBroker() as broker:
        create_topic(broker.bootstrap, TOPIC, 2)
        asyncio.run(produce_batches(broker.bootstrap, TOPIC, BATCHES, PER_BATCH))
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=20)
        try:
            tps = [KafkaTP(TOPIC, p) for p in (0, 1)]
            assert end_offsets(consumer, tps) == {tps[0]: BATCHES * PER_BATCH, tps[1]: 0}
        finally:
            consumer.close()
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=broker.bootstrap))
        # idle 0: the read stops as soon as it reaches the end offsets it believes in
        read = list(read_messages(settings, TOPIC, from_beginning=True, idle_timeout_s=0.0))
    assert len(read) == BATCHES * PER_BATCH
