"""Create cartstream's topics with their configured partition counts (idempotent)."""

from __future__ import annotations

import contextlib
import logging
import time

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from cartstream.core.settings import Settings
from cartstream.core.topics import tick_topic_name
from cartstream.exceptions import BrokerError

log = logging.getLogger(__name__)


def admin_client(settings: Settings, timeout_s: float | None = None) -> KafkaAdminClient:
    """An admin client, waiting up to `timeout_s` (default `kafka.startup_wait_s`) for a
    broker to answer."""
    wait_s = settings.kafka.startup_wait_s if timeout_s is None else timeout_s
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return KafkaAdminClient(
                **settings.kafka.kafka_python_config(), request_timeout_ms=10_000
            )
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}"
                ) from exc
            time.sleep(0.3)


def ensure_tick_topics(settings: Settings, stages: list[str]) -> dict[str, int]:
    """The tick topics of these stateful stages, co-partitioned with the cart streams.

    Created up front: a topic first touched by a producer would get the broker's default
    partition count, and the stage sends each tick to its table partition."""
    partitions = settings.topics.stream_partitions
    wanted = {tick_topic_name(settings.app_id, stage): partitions for stage in stages}
    counts = ensure_topics(settings, wanted)
    wrong = [f"{n} has {c}" for n, c in sorted(counts.items()) if c != partitions]
    if wrong:
        raise BrokerError(
            f"tick topics must have {partitions} partitions like the cart streams: "
            + ", ".join(wrong)
            + " (delete them, or set CARTSTREAM_APP_ID to start afresh)"
        )
    return counts


def check_stream_partitions(settings: Settings) -> dict[str, int]:
    """The cart-keyed streams that exist, with their partition counts; `BrokerError` when one
    has other than `topics.stream_partitions` (a cart's records would be read from one partition
    number and its detections written to another, or to one that does not exist)."""
    partitions = settings.topics.stream_partitions
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        names = [n for n in settings.topics.streams() if n in existing]
        counts = partition_counts(admin, names) if names else {}
    finally:
        admin.close()
    wrong = [f"{n} has {c}" for n, c in sorted(counts.items()) if c != partitions]
    if wrong:
        raise BrokerError(
            f"the cart streams must all have {partitions} partitions "
            "(CARTSTREAM_TOPICS__STREAM_PARTITIONS): "
            + ", ".join(wrong)
            + "; they are read side by side, one partition number per cart"
        )
    return counts


def ensure_topics(settings: Settings, topics: dict[str, int] | None = None) -> dict[str, int]:
    """Create every missing topic; return name -> partition count as the cluster reports it."""
    wanted = topics if topics is not None else settings.topics.all_topics()
    if not wanted:  # a worker with no stateful role wants no tick topic
        return {}
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name, partitions, settings.topics.replication_factor)
            for name, partitions in wanted.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing, timeout_ms=10_000)
            log.info("created topics %s", ", ".join(t.name for t in missing))
        counts = partition_counts(admin, list(wanted))
    finally:
        admin.close()
    for name, count in sorted(counts.items()):
        if count != wanted[name]:
            log.warning("topic %s has %d partitions, configured %d", name, count, wanted[name])
    return counts


def partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partitions of these topics; `names` must not be empty (kafka-python would describe every
    topic of the cluster)."""
    counts: dict[str, int] = {}
    for meta in admin.describe_topics(names):
        counts[str(meta.get("name") or meta.get("topic"))] = len(meta.get("partitions") or [])
    return counts
