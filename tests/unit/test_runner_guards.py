"""No exception acknowledges a record, and nothing read again is applied twice (issue 38):
the detect runner reads a failed batch again; a stateful stage skips a record its key's
progress says it applied (what a replay after a recovery delivers again); a partition a
recovery must read again starts there, not at its committed offset; ids built from hostile
keys carry nothing a database refuses."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from cartstream.core.ids import claimed_id, id_problem
from cartstream.core.settings import Settings
from cartstream.exceptions import ValidationError
from cartstream.schemas.validation import validate_session_event
from cartstream.streams.batch_runner import BatchRunner
from cartstream.streams.changelog import Replays
from cartstream.streams.checkpoint import installed
from cartstream.streams.runtime.faust_compat import in_order
from cartstream.streams.runtime.faust_compat.in_order import InOrder
from cartstream.streams.stage import Inbound, Outbound
from tests.unit.test_stage_batches import FakeApp, FakePublisher


class Message(SimpleNamespace):
    """A consumer record that can be weakly referenced and hashed, as Faust's can."""

    __hash__ = object.__hash__


class Detector:
    """A batch stage whose model raises `failures` times, then returns nothing."""

    name = "detect"
    stateful = False
    in_flight = 1

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches = 0

    def inputs(self) -> Mapping[str, str]:
        return {"cart.frames": "cart_frame"}

    def validate(self, record: Mapping[str, Any], inbound: Inbound, now_ms: int) -> None:
        return None

    def describe(self) -> dict[str, str]:
        return {"cartstream.provider": "cpu"}

    def handle_batch(self, records: Sequence[Any], *_: Any) -> list[Outbound]:
        self.batches += 1
        if self.failures:
            self.failures -= 1
            raise RuntimeError("CUDA error: an illegal memory access")
        return []


def test_a_detector_that_raises_reads_its_batch_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust restarted the agent and `take_events` acknowledged the batch: its frames never got
    detections, and the steps waiting for them were decided without."""
    monkeypatch.setattr("cartstream.streams.input_runner.RETRY_FIRST_S", 0.0)
    stage = Detector(failures=1)
    runner = BatchRunner(FakeApp(), stage, settings, FakePublisher(), 8, 5.0)  # type: ignore[arg-type]
    again: list[Any] = []

    async def read_again(messages: Any) -> None:
        again.extend(messages)

    monkeypatch.setattr(runner.ingress, "admit", lambda *_: SimpleNamespace(outputs=[], record={}))
    runner.in_order.again = read_again  # type: ignore[method-assign]
    batch = [
        Message(
            topic="cart.frames",
            partition=0,
            offset=o,
            key=b"c",
            value=b"",
            headers={},
            timestamp=0.0,
        )
        for o in (7, 8)
    ]
    asyncio.run(runner.guarded(batch))
    assert again == batch  # read again, never acknowledged
    asyncio.run(runner.guarded(batch))
    assert stage.batches == 2 and again == batch  # the second delivery went through
    runner.close()


class Consumer:
    def __init__(self, committed: dict[TP, int]) -> None:
        self._committed_offset = committed
        self._read_offset: dict[TP, int] = {}


def test_a_partition_a_recovery_must_read_again_starts_at_the_replay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tp = TP("cart.detections", 5)
    app = SimpleNamespace(consumer=Consumer({tp: 61}), flow_control=SimpleNamespace())
    guard = InOrder(app, "reason", [tp.topic])
    guard.replays = Replays()
    guard.replays.need(tp.topic, 5, 51)
    sought: list[int] = []

    async def seek(consumer: Any, where: Any, offset: int) -> bool:
        sought.append(offset)
        return True

    monkeypatch.setattr(in_order, "seek", seek)
    first = Message(tp=tp, offset=61, acked=False)
    assert not asyncio.run(guard.admit(first))  # the committed offset: too far on
    assert sought == [51] and guard.expected[tp] == 51
    assert asyncio.run(guard.admit(Message(tp=tp, offset=51, acked=False)))
    assert guard.replays.take(tp.topic, 5) is None  # taken once


def test_ids_from_hostile_keys_carry_nothing_a_database_refuses() -> None:
    """Issue 38: a SPOOFED_EVENT alert for a key holding NUL named it as the cart; Postgres
    refused the row ("text fields cannot contain NUL") and persist crash-looped 94 times."""
    assert claimed_id(b"cart-0042") == "cart-0042"
    for hostile in (
        b"cart\x00evil",
        b"\xff\xfe",
        b"a\x1b[2J",
        "x\ud800".encode(errors="surrogatepass"),
        b"k" * 200,
    ):
        made = claimed_id(hostile)
        assert id_problem(made) is None and "\x00" not in made
        assert made.startswith("key:") and bytes.fromhex(made[4:68].rstrip(".")) == hostile[:32]
    assert claimed_id(None) == ""


def test_a_record_whose_ids_hold_control_characters_is_dead_lettered() -> None:
    event = {
        "event_id": "e1",
        "cart_id": "cart\x00",
        "store_id": "s",
        "session_id": "x",
        "time_ms": 1_000_000_000_000,
    }
    with pytest.raises(ValidationError, match="cart_id holds the control character"):
        validate_session_event(event, 1_000_000_000_000, 60)  # type: ignore[arg-type]


def test_a_record_read_again_writes_its_keys_state_again(settings: Settings, catalog: Any) -> None:
    """At a rebalance Faust revokes every partition: pending changelog writes are dropped while
    the table keeps the states they held. The inputs read again must write those states, even
    though the stage finds them applied (the chaos suite saw sessions whose checkout was
    published stay open in the changelog when a runner skipped such records)."""
    from tests.unit.test_stage_batches import _messages, _runner

    weight = settings.with_overrides(reason={"mode": "weight"})
    messages = _messages(weight, catalog)[:40]
    stage_runner, app = _runner(weight, catalog, FakePublisher())
    asyncio.run(stage_runner.handle_batch(messages))
    before = {k: dict(v.record) for k, v in app.table.items()}
    installed(app).on_partitions_revoked({TP(m.topic, m.partition) for m in messages})
    assert len(stage_runner.changelog) == 0  # dropped, never written
    asyncio.run(stage_runner.handle_batch(messages))  # read again after the rebalance
    app.commit()
    written = {key: value.record for _, key, value in app.table.changelog}
    assert written == before
    stage_runner.stage.close()
