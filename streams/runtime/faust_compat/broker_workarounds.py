"""Workarounds for the embedded test/demo broker (Tansu 0.6), on Faust's aiokafka consumer.

Applied only when the settings' broker profile asks for them (`BrokerTuning`); a real Kafka
cluster needs none. Each one is idempotent (once per process) and names the broker behaviour
it works around.

**End offsets from a fetch.** Tansu answers ListOffsets(latest) from its storage listing: the
first offset of the *first batch written in the newest timestamp*, plus one. In memory that is
the newest batch's first record (a batch of 25 records reports 24 too few); on S3 storage, whose
timestamps have one-second resolution, it is the first batch of the newest second, so a table's
changelog can be reported hundreds of records short, and it stays so after a broker restart
until more is written. Faust's table recovery reads to that end offset, so a recovering worker
stops early (state lost: "weight packets 37..127 missing"), and a worker whose table already
applied more raises `ConsistencyError` and exits. The high watermark in a Fetch response is
right (Tansu keeps it in `watermark.json`). `end_offsets_from_fetch` makes Faust's
`highwaters()` the larger of the two answers: one extra fetch request per leader per recovery,
for at most one byte per partition.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.errors import for_code
from aiokafka.protocol.fetch import FetchRequest

log = logging.getLogger(__name__)

_INSTALLED = "_cartstream_end_offsets_from_fetch"
READ_UNCOMMITTED = 0


async def fetched_high_watermarks(
    client: Any, listed: Mapping[Any, int | None]
) -> dict[Any, int | None]:
    """`listed` (partition -> end offset from ListOffsets) raised to the high watermark that a
    Fetch at that offset reports; a partition whose fetch fails keeps its listed offset.

    `client`: aiokafka's `AIOKafkaClient`; partitions are (topic, partition) tuples."""
    requests: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for tp, offset in listed.items():
        node = client.cluster.leader_for_partition(tp)
        if node is None or node < 0:
            continue
        requests[node][tp[0]].append((tp[1], max(0, offset or 0), 1))
    result: dict[Any, int | None] = dict(listed)
    keys = {(tp[0], tp[1]): tp for tp in listed}
    for node, topics in requests.items():
        request = FetchRequest(10, 1, 1, READ_UNCOMMITTED, list(topics.items()))
        try:
            response = await client.send(node, request)
        except Exception as exc:  # the listed offsets stand: the caller asks again later
            log.warning("high watermarks from node %s: %s; keeping the listed offsets", node, exc)
            continue
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *_ in partitions:
                tp = keys.get((topic, partition))
                if tp is None:
                    continue
                if error_code:
                    log.warning(
                        "high watermark of %s[%d]: %s", topic, partition, for_code(error_code)
                    )
                    continue
                if highwater > (result[tp] or 0):
                    log.debug(
                        "%s[%d]: end offset %s listed, %d fetched",
                        topic,
                        partition,
                        result[tp],
                        highwater,
                    )
                    result[tp] = highwater
    return result


def end_offsets_from_fetch() -> None:
    """Faust's `highwaters()` (table recovery's end offsets) become the larger of ListOffsets'
    answer and a Fetch's high watermark (see the module docstring)."""
    from faust.transport.drivers import aiokafka as driver

    thread_cls = driver.AIOKafkaConsumerThread
    original = thread_cls._highwaters
    if getattr(original, _INSTALLED, False):
        return

    async def highwaters(self: Any, partitions: Sequence[Any]) -> Mapping[Any, int | None]:
        listed: Mapping[Any, int | None] = await original(self, partitions)
        if self.consumer.in_transaction:
            return listed
        return await fetched_high_watermarks(self._ensure_consumer()._client, listed)

    setattr(highwaters, _INSTALLED, True)
    thread_cls._highwaters = highwaters


def fetch_limits(max_wait_ms: int | None, min_bytes: int) -> None:
    """Faust builds its aiokafka consumer with fetch_max_wait_ms=1500, fetch_min_bytes=1 and
    no setting for either; these are applied to the consumer object before it starts (`max_wait_ms`
    None: Faust's; the `kafka` profile's limits are the clients' defaults). The last call wins.

    The wait: on Kafka 1.5 s costs nothing (a fetch returns as soon as records arrive); Tansu
    answers a fetch that found nothing only when the wait expires, even when records arrive
    sooner, so every hop would add up to that. The minimum: Tansu answers at once whenever the
    fetched partitions hold anything, so a busy worker sends hundreds of small fetches a
    second (see `BrokerTuning.for_profile`)."""
    from faust.transport.drivers import aiokafka as driver

    thread_cls = driver.AIOKafkaConsumerThread
    original = thread_cls._create_worker_consumer
    limits = (max_wait_ms, min_bytes)
    if getattr(original, "_cartstream_fetch_limits", None) == limits:
        return
    original = getattr(original, "_cartstream_original", original)

    def create(self: object, transport: object) -> object:
        consumer = original(self, transport)
        if max_wait_ms is not None:
            consumer._fetch_max_wait_ms = max_wait_ms
        consumer._fetch_min_bytes = min_bytes
        return consumer

    create._cartstream_fetch_limits = limits  # type: ignore[attr-defined]
    create._cartstream_original = original  # type: ignore[attr-defined]
    thread_cls._create_worker_consumer = create
