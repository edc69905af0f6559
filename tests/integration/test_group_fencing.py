"""The broker refuses an offset commit from a stale generation of the group.

Recovery keeps each key's most advanced state (streams/changelog.py): a worker that was
superseded can still write changelog records, since nothing fences a producer here, but it
must not move the group's committed offsets past what the current owner stored. That part is
the broker's: a commit carries the member id and the generation it was made in, and a commit
from a generation before the last rebalance is refused (IllegalGeneration), as is one from a
member the group no longer has (UnknownMemberId). This pins that behaviour of the broker the
tests and the demo use (Kafka does the same).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.protocol.commit import OffsetCommitRequest

from cartstream.services.kafka.broker import EmbeddedBroker
from tests.topic_batches import create_topic, produce_batches

TOPIC = "fencing.probe"
ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID = 22, 25


def _consumer(bootstrap: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def _until(check: Callable[[], object], seconds: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "the group did not settle in time"
        await asyncio.sleep(0.1)


async def _commit(consumer: AIOKafkaConsumer, generation: int, member: str, offset: int) -> int:
    """Commit `offset` of partition 0 as (generation, member); the broker's error code."""
    coordinator = consumer._coordinator
    request = OffsetCommitRequest(
        coordinator.group_id, generation, member, -1, [(TOPIC, [(0, offset, "")])]
    )
    response = await consumer._client.send(coordinator.coordinator_id, request)
    return int(response.topics[0][1][0][1])


async def _scenario(bootstrap: str) -> dict[str, int]:
    group = f"fencing-{uuid.uuid4().hex[:8]}"
    first = _consumer(bootstrap, group)
    await first.start()
    second = _consumer(bootstrap, group)
    try:
        await _until(lambda: first.assignment())
        old = first._coordinator.generation
        member = first._coordinator.member_id
        codes = {"in its generation": await _commit(first, old, member, 3)}
        await second.start()  # a rebalance: both members join the next generation
        await _until(
            lambda: (
                first._coordinator.generation > old and first.assignment() and second.assignment()
            )
        )
        assert first._coordinator.member_id == member
        codes["from the generation before"] = await _commit(first, old, member, 9)
        codes["from a member the group lacks"] = await _commit(
            first, first._coordinator.generation, "no-such-member", 9
        )
        codes["in the new generation"] = await _commit(
            first, first._coordinator.generation, member, 5
        )
        committed = await second.committed(
            next(tp for tp in first.assignment() | second.assignment() if tp.partition == 0)
        )
        codes["committed"] = int(committed or -1)
    finally:
        await second.stop()
        await first.stop()
    return codes


def test_a_commit_from_a_stale_generation_or_member_is_refused() -> None:
    with EmbeddedBroker() as broker:
        create_topic(broker.bootstrap, TOPIC, 2)
        asyncio.run(produce_batches(broker.bootstrap, TOPIC, 2, 5))
        codes = asyncio.run(_scenario(broker.bootstrap))
    assert codes == {
        "in its generation": 0,
        "from the generation before": ILLEGAL_GENERATION,
        "from a member the group lacks": UNKNOWN_MEMBER_ID,
        "in the new generation": 0,
        "committed": 5,  # the refused commits (9) moved nothing
    }
