"""What every stage is: a deterministic function of (state, input record) -> (state, outputs).

Stages know nothing of Faust or Kafka clients. `cartstream.streams.runner` (and `sink_runner`)
run them as Faust agents on a broker; `cartstream.streams.testing` runs them in memory. Both give
a stage the same `Inbound` (where a record came from) and take the same `Outbound`s (what to
publish).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from cartstream.core.ids import TRACEPARENT

S = TypeVar("S")  # a stage's per-key state (a dataclass; None for a stateless stage)

# how long a stateful stage keeps a closed session's state, to drop late duplicates
STATE_RETENTION_MS = 6 * 3600 * 1000


@dataclass(frozen=True)
class Inbound:
    """Where an input record came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int  # the message's Kafka timestamp (producer create time)
    headers: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def traceparent(self) -> bytes | None:
        return self.headers.get(TRACEPARENT)


@dataclass(frozen=True)
class Outbound:
    """One record to publish. `traceparent`: the trace it continues (None: the span of the
    input being processed); `links`: traceparents of the other records it was made from (the
    frames and weight packets of a basket change, the changes of a checkout); `partition`: where
    it goes (None: the producer's partitioner picks by key)."""

    topic: str
    key: str
    schema: str
    record: Mapping[str, Any]
    traceparent: bytes | None = None
    links: tuple[bytes, ...] = ()
    partition: int | None = None


@dataclass
class Result(Generic[S]):
    """A stage's answer: the key's new state (None: forget the key) and what to publish."""

    state: S | None
    outputs: list[Outbound] = field(default_factory=list)


class Stage(Protocol[S]):
    """A stream stage. Implementations must be deterministic in (state, record).

    Life cycle: `start()` once before the first input (load models, warm up), `close()` once
    after the last (release executors and sessions). Both may be no-ops.

    State: a typed value per key; `dump_state` turns it into the JSON-able dict a table's
    changelog stores, `load_state` reads one back (upgrading a state an older release wrote).
    """

    name: str
    stateful: bool  # False: no table, state is always None

    def start(self) -> None: ...

    def close(self) -> None: ...

    def inputs(self) -> Mapping[str, str]:
        """Input topic -> the schema name it carries."""
        ...

    def validate(self, record: Mapping[str, Any], inbound: Inbound, now_ms: int) -> None:
        """Raise cartstream.ValidationError when the record must go to the dead-letter topic."""
        ...

    def state_key(self, record: Mapping[str, Any]) -> str: ...

    def load_state(self, data: Mapping[str, Any]) -> S: ...

    def dump_state(self, state: S) -> dict[str, Any]: ...

    def handle(
        self, state: S | None, record: Mapping[str, Any], inbound: Inbound, now_ms: int
    ) -> Result[S]: ...

    def needs_tick(self, state: S, now_ms: int) -> bool:
        """True when `tick` has work for this key (a deadline passed, retention is over)."""
        ...

    def tick(self, state: S, now_ms: int) -> Result[S]: ...


class Sink(Protocol):
    """The end of a stream: writes every input to a store outside Kafka. No state, no outputs.

    `write` must be idempotent (a re-delivered record finds its row and writes nothing) and may
    block; it raises cartstream.StoreUnavailable when the store cannot be reached, and the
    runner retries the same record (its offset is not committed meanwhile).
    """

    name: str

    def start(self) -> None: ...

    def close(self) -> None: ...

    def inputs(self) -> Mapping[str, str]: ...

    def validate(self, record: Mapping[str, Any], inbound: Inbound, now_ms: int) -> None: ...

    def operation(self, inbound: Inbound) -> tuple[str, dict[str, str]]:
        """The write's span name and attributes for a record from this input."""
        ...

    def write(self, record: Mapping[str, Any], inbound: Inbound) -> bool:
        """Store the record; True when it was new."""
        ...


class Sequenced(Protocol):
    next_seq: int  # the next per-session change number to apply


def accept_in_order(state: Sequenced, seq: int) -> bool:
    """Per-session change numbers: apply `seq` once, in order; False for a re-delivery."""
    if seq < state.next_seq:
        return False
    state.next_seq = seq + 1
    return True
