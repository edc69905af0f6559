"""Consumer lag of a worker group, from outside: end offsets minus committed offsets.

On the embedded broker the end offset can be reported low (Tansu counts only the first record
of the newest batch, and briefly after a restart), so a lag read here is a lower bound and is
never below zero; what was processed is verified from the outputs, not from these numbers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from cartstream.core.settings import Settings

log = logging.getLogger(__name__)


class LagProbe:
    def __init__(self, settings: Settings, groups: Mapping[str, Iterable[str]]) -> None:
        """`groups`: consumer group -> the topics it consumes."""
        self.settings = settings
        self.groups = {g: list(topics) for g, topics in groups.items()}
        self._admin: KafkaAdminClient | None = None
        self._consumer: KafkaConsumer | None = None

    def _clients(self) -> tuple[KafkaAdminClient, KafkaConsumer]:
        if self._admin is None or self._consumer is None:
            cfg = self.settings.kafka.kafka_python_config()
            self._admin = KafkaAdminClient(**cfg, request_timeout_ms=3000)
            self._consumer = KafkaConsumer(**cfg, request_timeout_ms=3000)
        return self._admin, self._consumer

    def sample(self) -> tuple[int, int] | None:
        """(total lag, total committed) over the groups' input partitions; None if the broker
        did not answer (the probe reconnects next time)."""
        try:
            admin, consumer = self._clients()
            lag = committed = 0
            for group, topics in self.groups.items():
                partitions = [
                    TopicPartition(t, p)
                    for t in topics
                    for p in sorted(consumer.partitions_for_topic(t) or ())
                ]
                ends = consumer.end_offsets(partitions)
                offsets = admin.list_group_offsets({group: partitions}).get(group, {})
                for tp in partitions:
                    meta = offsets.get(tp)
                    done = meta.offset if meta is not None and meta.offset >= 0 else 0
                    committed += done
                    lag += max(0, int(ends.get(tp) or 0) - done)
            return lag, committed
        except (KafkaError, OSError, ValueError, AssertionError) as exc:
            log.debug("lag probe: %s", exc)
            self.close()
            return None

    def close(self) -> None:
        for client in (self._admin, self._consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self._admin = self._consumer = None
