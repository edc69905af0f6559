"""A cart's detections go to its frame's partition number, where reason reads its weight packets:
the cart chose that partition with its own client's partitioner, which need not be the
workers' (librdkafka's default hashes keys with CRC32, Kafka's clients with murmur2)."""

from __future__ import annotations

import asyncio
from typing import Any

from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.train import render_dataset
from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import DETECTION
from cartstream.services.tools.bench import frame_records
from cartstream.streams.detect import DetectStage
from cartstream.streams.publish import Publisher
from cartstream.streams.stage import Inbound, Outbound


def test_each_detection_goes_to_its_frames_partition(catalog: Catalog) -> None:
    images, _ = render_dataset(catalog, 4, seed=9)
    records = frame_records(images, 8)
    settings = Settings().with_overrides(detect={"threads": 1, "review_below": 1.0})
    stage = DetectStage(settings, catalog)
    stage.start()
    try:
        partitions = [5, 2, 7, 0, 5, 3, 1, 6]  # where each frame was consumed from
        inbounds = [Inbound("cart.frames", p, n, b"c", now_ms()) for n, p in enumerate(partitions)]
        outputs = stage.handle_batch(records, inbounds, [b""] * len(records), now_ms())
    finally:
        stage.close()
    topics = settings.topics
    detections = [o for o in outputs if o.topic == topics.detections]
    by_frame = {o.record["frame_event_id"]: o.partition for o in detections}
    assert by_frame == {r["event_id"]: p for r, p in zip(records, partitions, strict=True)}
    # review frames live on a topic of another size: the key decides there
    reviews = [o for o in outputs if o.topic == topics.review_frames]
    assert reviews and all(o.partition is None for o in reviews)


class _Producer:
    """Faust's producer `send`: the topic, key and value as bytes, then keyword arguments."""

    def __init__(self, sent: list[dict[str, Any]]) -> None:
        self.sent = sent

    async def send(
        self, topic: str, key: bytes, value: bytes, **kwargs: Any
    ) -> asyncio.Future[None]:
        self.sent.append({"topic": topic, "key": key, "value": value, **kwargs})
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _Codec(AvroCodec):
    def encode(self, schema: str, record: Any) -> bytes:
        return b"x"  # encoding is not what is tested here


class _App:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.producer = _Producer(self.sent)

    async def maybe_start_producer(self) -> _Producer:
        return self.producer


def test_the_publisher_sends_an_outputs_partition_to_the_broker() -> None:
    app = _App()
    publisher = Publisher(app, _Codec())  # type: ignore[arg-type]
    record = {"event_id": "e"}

    async def publish() -> None:
        await publisher.publish(
            [
                Outbound("cart.detections", "cart-1", DETECTION, record, partition=6),
                Outbound("cart.detections", "cart-1", DETECTION, record),
            ],
            "detect",
        )

    asyncio.run(publish())
    assert [s["partition"] for s in app.sent] == [6, None]
    assert all(s["key"] == b"cart-1" and s["topic"] == "cart.detections" for s in app.sent)
