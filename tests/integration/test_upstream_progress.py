"""Another consumer group's progress, asked of the real broker (streams/upstream.py): what
reason's deadlines wait for when detect runs in a Deployment of its own."""

from __future__ import annotations

import asyncio

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from cartstream.core.settings import KafkaSettings, Settings
from cartstream.services.kafka.broker import EmbeddedBroker
from cartstream.streams.upstream import GroupProgress
from tests.topic_batches import create_topic

pytestmark = pytest.mark.integration


def test_a_groups_committed_offsets_and_the_logs_true_ends() -> None:
    with EmbeddedBroker() as broker:
        create_topic(broker.bootstrap, "frames", 2)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
        for _ in range(5):  # one batch of five: the test broker lists its end as 1
            producer.send("frames", b"frame", partition=1)
        producer.flush()
        producer.close()
        detect = KafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id="shop-detect", enable_auto_commit=False
        )
        detect.commit({TopicPartition("frames", 1): OffsetAndMetadata(3, "", -1)})
        detect.close()
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=broker.bootstrap), broker_profile="tansu"
        )
        progress = GroupProgress(settings, "frames", "shop-detect")
        try:
            progress.wanted = True  # a deadline asked
            asyncio.run(progress.refresh())
            assert progress.failed == 0
            assert (progress.position(1), progress.end(1)) == (3, 5)  # behind: 2 frames left
            assert (progress.position(0), progress.end(0)) == (None, 0)  # nothing there
        finally:
            progress.close()
