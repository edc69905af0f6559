"""`log_holes`: the broker says which offset a partition's log holds first from a given one,
through a hole the broker left (a batch counted but never stored, as a broker killed
mid-produce leaves it on S3 storage) and from inside a batch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cartstream.services.kafka.broker import EmbeddedBroker
from cartstream.services.kafka.durable import BUCKET, LocalS3
from cartstream.streams.runtime.faust_compat.log_holes import _first_offset_from
from tests.topic_batches import create_topic, produce_batches

TOPIC = "holes.probe"


async def _first_offsets(bootstrap: str, offsets: list[int]) -> list[int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        await consumer._client.force_metadata_update()
        return [await _first_offset_from(consumer._client, tp, o) for o in offsets]
    finally:
        await consumer.stop()


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[LocalS3]:
    with LocalS3(tmp_path / "moto.log") as store:
        yield store


def _probe_with_a_batch_lost(
    s3: LocalS3, tmp_path: Path, lost: int, offsets: list[int]
) -> list[int | None]:
    """Ten single-record batches on S3 storage, the one at offset `lost` deleted behind the
    broker's back (as a crash mid-produce leaves it); the probe's answers at `offsets`."""
    with EmbeddedBroker(
        log_path=tmp_path / "tansu.log", storage=s3.storage, env=s3.broker_env()
    ) as broker:
        create_topic(broker.bootstrap, TOPIC, 1)
        asyncio.run(produce_batches(broker.bootstrap, TOPIC, 10, 1))
        objects = boto3.client(
            "s3",
            endpoint_url=s3.endpoint,
            aws_access_key_id="x",
            aws_secret_access_key="x",
            region_name="us-east-1",
        )
        listed = objects.list_objects_v2(Bucket=BUCKET, Prefix="clusters/")["Contents"]
        suffix = f"/{TOPIC}/partitions/0000000000/records/{lost:020d}.batch"
        (batch,) = [o["Key"] for o in listed if o["Key"].endswith(suffix)]
        objects.delete_object(Bucket=BUCKET, Key=batch)
        return asyncio.run(_first_offsets(broker.bootstrap, offsets))


def test_a_batch_the_broker_never_stored_is_a_hole_the_probe_sees(
    s3: LocalS3, tmp_path: Path
) -> None:
    assert _probe_with_a_batch_lost(s3, tmp_path, 4, [3, 4, 9]) == [3, 5, 9]


def test_a_hole_at_the_logs_tail_is_seen_up_to_the_high_watermark(
    s3: LocalS3, tmp_path: Path
) -> None:
    """Issue 38: a changelog whose last record the broker acknowledged and never stored; the
    probe once answered nothing there, and a recovery waiting for it waited for good."""
    answers = _probe_with_a_batch_lost(s3, tmp_path, 9, [8, 9])
    assert answers == [8, 10]  # 9 is not in the log, 10 is its end


def test_an_offset_inside_a_batch_is_in_the_log() -> None:
    with EmbeddedBroker() as broker:
        create_topic(broker.bootstrap, TOPIC, 1)
        asyncio.run(produce_batches(broker.bootstrap, TOPIC, 3, 5))
        answers = asyncio.run(_first_offsets(broker.bootstrap, [0, 7, 14, 15]))
    assert answers == [0, 7, 14, None]  # 15: past the end, nothing comes within the wait
