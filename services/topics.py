"""Create cartstream's topics with their configured partition counts (idempotent)."""

from __future__ import annotations

import contextlib
import logging
import time

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from cartstream.exceptions import BrokerError
from cartstream.services.settings import Settings

log = logging.getLogger(__name__)


def admin_client(settings: Settings, timeout_s: float = 15.0) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout_s
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


def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create every missing topic; return name -> partition count as the cluster reports it."""
    wanted = settings.topics.all_topics()
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
        return partition_counts(admin, list(wanted))
    finally:
        admin.close()


def partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for meta in admin.describe_topics(names):
        counts[str(meta.get("name") or meta.get("topic"))] = len(meta.get("partitions") or [])
    return counts
