"""A topic written as batches of a known size, for tests of how the broker answers about them."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


async def produce_batches(bootstrap: str, topic: str, batches: int, per_batch: int) -> None:
    """`batches` batches of `per_batch` records on partition 0 (each batch awaited whole)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for _ in range(batches):
            sent = [await producer.send(topic, b"v", partition=0) for _ in range(per_batch)]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
