"""The broker's lost writes: records it acknowledged to the carts that its log does not hold.

A checkout the chaos verifier finds lost was lost either by the pipeline or by the broker
(Tansu on S3 storage, killed with -9 in the middle of a produce). The two call for different
fixes, so a run keeps the ledger of every cart record the broker acknowledged (topic, partition,
offset, event id) and, when sessions are lost, reads the partitions their carts wrote to and
names each acknowledged record whose event id is not there (Jepsen's lost-write check, at the
first hop). A record found at another offset than the one acknowledged (a retried batch) is not
lost.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from cartstream.core.ids import EVENT_ID_HEADER
from cartstream.core.settings import Settings
from cartstream.services.carts.spool import SpoolRecord
from cartstream.services.kafka.tail import read_messages


@dataclass(frozen=True)
class Acked:
    topic: str
    partition: int
    offset: int
    key: str
    event_id: str

    def describe(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset} {self.key} event {self.event_id}"


class AckLedger:
    """Every acknowledged cart record; `CartClient(on_delivered=ledger.note)` fills it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._acked: list[Acked] = []

    def note(self, record: SpoolRecord, partition: int, offset: int) -> None:
        event_id = dict(record.headers).get(EVENT_ID_HEADER, b"").decode()
        with self._lock:
            self._acked.append(
                Acked(record.topic, partition, offset, record.key.decode(), event_id)
            )

    def of_keys(self, keys: Iterable[str]) -> list[Acked]:
        wanted = set(keys)
        with self._lock:
            return [a for a in self._acked if a.key in wanted]


def absent_from_log(settings: Settings, acked: Iterable[Acked]) -> list[Acked]:
    """The acknowledged records whose event id the partition they went to does not hold."""
    by_topic: dict[str, dict[int, list[Acked]]] = defaultdict(lambda: defaultdict(list))
    for a in acked:
        by_topic[a.topic][a.partition].append(a)
    absent: list[Acked] = []
    for topic, partitions in sorted(by_topic.items()):
        present: dict[int, set[str]] = defaultdict(set)
        for msg in read_messages(settings, topic, partitions=sorted(partitions)):
            event_id = dict(msg.headers or []).get(EVENT_ID_HEADER)
            if event_id:
                present[msg.partition].add(bytes(event_id).decode())
        for partition, records in sorted(partitions.items()):
            absent += [a for a in records if a.event_id not in present[partition]]
    return absent
