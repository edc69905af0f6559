"""The Faust runner takes a stateful stage's inputs in batches: the outputs and states are
those of one record at a time; each key's state is stored only after the batch's outputs were
acknowledged, and written to the changelog once per commit, when the consumer starts it."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from cartstream.core import telemetry
from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.schemas.codec import AvroCodec
from cartstream.services.carts.simulate import SimConfig, cart_events, plan_carts
from cartstream.streams import runner
from cartstream.streams.backlog import tick_value
from cartstream.streams.changelog import PROGRESS_FIELD
from cartstream.streams.checkpoint import installed
from cartstream.streams.reason import ReasonStage
from cartstream.streams.stage import Outbound
from tests.unit.test_backlog import FakeConsumer
from tests.unit.test_persist_sink import FakeApp as SinkRunnerApp


class FakeTable(dict[str, Any]):
    """A Faust table in a dict, recording what goes to its changelog (partition, key, value)."""

    def __init__(self) -> None:
        super().__init__()
        self.changelog: list[tuple[int, str, Any]] = []

    @property
    def data(self) -> FakeTable:
        return self

    @property
    def writes(self) -> int:
        return len(self.changelog)

    def send_changelog(self, partition: int, key: str, value: Any, **_: Any) -> None:
        self.changelog.append((partition, key, value))

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        for event in batch:
            self[event.key] = event.value


class FakeApp(SinkRunnerApp):
    """Just enough of a Faust app to build a StageRunner: a sink runner's, with tables;
    `commit()` writes what the checkpoint takes at a commit (its order is test_checkpoint's)."""

    def __init__(self) -> None:
        super().__init__()
        self.conf = SimpleNamespace(id="batch-test")
        self.table = FakeTable()
        self.tables = SimpleNamespace(on_partitions_revoked=lambda revoked: None)

    def Table(self, *_: Any, **__: Any) -> FakeTable:
        return self.table

    def commit(self) -> None:
        checkpoint = installed(self)
        assert checkpoint is not None
        for writes in checkpoint.writes:
            for key, (value, partition) in writes.take().items():
                self.table.changelog.append((partition, key, value))


class FakePublisher:
    """Records what would be published; `fail` makes the broker refuse the batch."""

    def __init__(self, fail: bool = False) -> None:
        self.codec = AvroCodec()
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.fail = fail

    async def publish(self, outputs: Iterable[Outbound], stage: str, **_: Any) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        # `published_ms` is the wall clock at publication: the one field two runs never share
        self.sent += [
            (o.topic, o.key, {k: v for k, v in o.record.items() if k != "published_ms"})
            for o in outputs
        ]


def _messages(settings: Settings, catalog: Catalog) -> list[SimpleNamespace]:
    planned = plan_carts(SimConfig(carts=3, sessions=2, seed=11, run_id="b"), catalog)
    codec = AvroCodec()
    inputs = ReasonStage(settings, catalog).inputs()
    messages = []
    events = [e for e in cart_events(planned, catalog, settings.topics, 50.0) if e[1] in inputs]
    for offset, (at, topic, key, schema, record) in enumerate(events):
        messages.append(
            SimpleNamespace(
                topic=topic,
                partition=zlib.crc32(key.encode()) % 8,
                offset=offset,
                tp=(topic, zlib.crc32(key.encode()) % 8),
                key=key.encode(),
                value=codec.encode(schema, record),
                headers={},
                timestamp=at / 1000.0,
            )
        )
    return messages


def _runner(
    settings: Settings, catalog: Catalog, publisher: FakePublisher
) -> tuple[runner.StageRunner, FakeApp]:
    app = FakeApp()
    stage = ReasonStage(settings, catalog)
    stage.start()
    stage_runner = runner.StageRunner(app, stage, settings, publisher)  # type: ignore[arg-type]

    async def admit(_: Any) -> bool:
        return True

    stage_runner.in_order.admit = admit  # type: ignore[method-assign]
    return stage_runner, app


async def _feed(
    stage_runner: runner.StageRunner, messages: Sequence[Any], batch: int, commit_every: int = 1
) -> None:
    """Batches of `batch` records, a commit after every `commit_every` batches and at the end."""
    app = stage_runner.app
    for n, start in enumerate(range(0, len(messages), batch), 1):
        await stage_runner.handle_batch(messages[start : start + batch])
        if n % commit_every == 0:
            app.commit()
    app.commit()


def _run(
    settings: Settings,
    catalog: Catalog,
    messages: Sequence[Any],
    batch: int,
    commit_every: int = 1,
) -> tuple[FakePublisher, FakeApp]:
    publisher = FakePublisher()
    stage_runner, app = _runner(settings, catalog, publisher)
    asyncio.run(_feed(stage_runner, messages, batch, commit_every))
    stage_runner.stage.close()
    return publisher, app


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both runs see the same wall clock (sessions record when they closed)."""
    now = int(time.time() * 1000)
    monkeypatch.setattr(runner, "now_ms", lambda: now)


@pytest.fixture
def weight_settings(settings: Settings) -> Settings:
    return settings.with_overrides(reason={"mode": "weight"})


def test_batches_give_the_outputs_and_states_of_one_record_at_a_time(
    weight_settings: Settings, catalog: Catalog
) -> None:
    messages = _messages(weight_settings, catalog)
    one, one_app = _run(weight_settings, catalog, messages, batch=1)
    many, many_app = _run(weight_settings, catalog, messages, batch=64)
    changes = [s for s in one.sent if s[0] == weight_settings.topics.basket_changes]
    assert len(changes) >= 6  # the sessions did put items in
    assert many.sent == one.sent
    assert {k: v.record for k, v in many_app.table.items()} == {
        k: v.record for k, v in one_app.table.items()
    }


def test_a_key_is_written_once_per_commit(weight_settings: Settings, catalog: Catalog) -> None:
    messages = _messages(weight_settings, catalog)
    _, one_app = _run(weight_settings, catalog, messages, batch=1)
    _, many_app = _run(weight_settings, catalog, messages, batch=16, commit_every=8)
    assert one_app.table.writes == len(messages)  # a commit per record: a write per record
    keys = [key for _, key, _ in one_app.table.changelog]  # each record's state key, in order
    keys_per_commit = sum(len(set(keys[i : i + 128])) for i in range(0, len(keys), 128))
    assert many_app.table.writes == keys_per_commit < len(messages) / 10
    # the changelog ends with every key's stored state, as a crash would recover it
    latest = {key: value for _, key, value in many_app.table.changelog}
    assert {k: v.record for k, v in latest.items()} == {
        k: v.record for k, v in many_app.table.items()
    }
    # each state goes to the changelog partition its cart's inputs come on
    cart_partition = {m.key.decode(): m.partition for m in messages}
    written = [(p, v) for p, _, v in many_app.table.changelog if v is not None]
    assert len({p for p, _ in written}) > 1
    assert all(p == cart_partition[v.state.cart_id] == v.partition for p, v in written)


def test_each_stored_state_carries_the_inputs_it_applied(
    weight_settings: Settings, catalog: Catalog
) -> None:
    """Its progress: per input topic, the highest offset applied to that key (what recovery
    compares when two owners wrote one key, changelog.py)."""
    messages = _messages(weight_settings, catalog)
    _, one_app = _run(weight_settings, catalog, messages, batch=1)
    _, many_app = _run(weight_settings, catalog, messages, batch=16, commit_every=8)
    keys = [key for _, key, _ in one_app.table.changelog]  # each record's state key, in order
    expected: dict[str, dict[str, int]] = {}
    for key, m in zip(keys, messages, strict=True):
        expected.setdefault(key, {})[m.topic] = m.offset
    for app in (one_app, many_app):
        assert {k: v.record[PROGRESS_FIELD] for k, v in app.table.items()} == expected
    assert len({t for p in expected.values() for t in p}) == 2  # weights and sessions


def test_nothing_reaches_the_changelog_before_a_commit_starts(
    weight_settings: Settings, catalog: Catalog
) -> None:
    messages = _messages(weight_settings, catalog)
    stage_runner, app = _runner(weight_settings, catalog, FakePublisher())
    asyncio.run(stage_runner.handle_batch(messages[:64]))
    assert app.table and app.table.writes == 0  # stored, not yet written
    app.commit()
    assert app.table.writes == len(app.table)
    app.commit()  # nothing new: nothing written again
    assert app.table.writes == len(app.table)
    stage_runner.stage.close()


def test_a_written_state_is_the_one_stored_not_a_later_one(
    weight_settings: Settings, catalog: Catalog
) -> None:
    """The changelog gets a snapshot taken when the batch stored the state: a later batch
    changing the live state before the commit does not leak into the earlier record."""
    messages = _messages(weight_settings, catalog)
    stage_runner, app = _runner(weight_settings, catalog, FakePublisher())
    asyncio.run(stage_runner.handle_batch(messages[:64]))
    stored = {k: dict(v.record) for k, v in app.table.items()}
    app.commit()
    asyncio.run(stage_runner.handle_batch(messages[64:128]))
    first = {key: value.record for _, key, value in app.table.changelog}
    assert first == stored
    stage_runner.stage.close()


def test_no_state_is_stored_when_the_batch_outputs_were_not_acknowledged(
    weight_settings: Settings, catalog: Catalog
) -> None:
    messages = _messages(weight_settings, catalog)
    stage_runner, app = _runner(weight_settings, catalog, FakePublisher(fail=True))
    with pytest.raises(ConnectionError):
        asyncio.run(_feed(stage_runner, messages, batch=len(messages)))
    app.commit()
    assert app.table.writes == 0 and not app.table  # the whole batch comes again
    stage_runner.stage.close()


class TickTopic:
    """The stage's tick topic: records what the deadline timer sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, int]] = []

    async def send(self, key: bytes, value: bytes, partition: int) -> None:
        self.sent.append((key, value, partition))


def test_deadline_ticks_wait_for_the_partitions_backlog(
    weight_settings: Settings, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's wiring of backlog.py: no tick is sent for a partition whose inputs hold
    records the stage has not processed; a tick that carries ends the stage has not reached
    (sent before a restart) is held, and acted on once it has."""
    messages = _messages(weight_settings, catalog)
    stage_runner, app = _runner(weight_settings, catalog, FakePublisher())
    asyncio.run(_feed(stage_runner, messages[: len(messages) // 2], batch=64))
    stage = stage_runner.stage
    monkeypatch.setattr(stage, "needs_tick", lambda state, now: True)
    ticked: list[str] = []
    tick = stage.tick

    def counted(state: Any, now: int) -> Any:
        ticked.append(state.cart_id)
        return tick(state, now)

    monkeypatch.setattr(stage, "tick", counted)
    topic = TickTopic()
    stage_runner.tick_topic = topic
    p = next(iter(app.table.values())).partition
    keys = sorted(k for k, v in app.table.items() if v.partition == p)
    inputs = sorted(stage.inputs())
    app.consumer = FakeConsumer({TP(t, p): 10 for t in inputs}, {})  # type: ignore[attr-defined]
    expected = stage_runner.in_order.expected
    expected.update({TP(t, p): 10 for t in inputs})
    expected[TP(inputs[0], p)] = 5  # five records of the partition not processed yet

    asyncio.run(stage_runner._send_ticks())
    assert [s for s in topic.sent if s[2] == p] == []  # held: the backlog comes first

    expected[TP(inputs[0], p)] = 10
    asyncio.run(stage_runner._send_ticks())
    sent = [s for s in topic.sent if s[2] == p]
    assert sorted(k.decode() for k, _, _ in sent) == keys
    assert {v for _, v, _ in sent} == {tick_value({t: 10 for t in inputs}, runner.now_ms())}

    key, value, _ = sent[0]
    delivered = SimpleNamespace(
        topic=stage_runner.tick_topic_name, partition=p, offset=0, key=key, value=value, headers={}
    )
    cart = app.table[key.decode()].state.cart_id
    expected[TP(inputs[0], p)] = 7  # a restarted worker, not as far on as the sender
    asyncio.run(stage_runner.handle_batch([delivered]))
    assert ticked == []
    sent_ms = runner.now_ms()
    monkeypatch.setattr(runner, "now_ms", lambda: sent_ms + runner.TICK_STALE_MS + 1)
    expected[TP(inputs[0], p)] = 10
    asyncio.run(stage_runner.handle_batch([delivered]))
    assert ticked == []  # read again long after it was sent (a re-read from an old offset)
    monkeypatch.setattr(runner, "now_ms", lambda: sent_ms + 1_000)
    asyncio.run(stage_runner.handle_batch([delivered]))
    assert ticked == [cart]
    stage.close()


def test_a_batch_whose_outputs_failed_is_applied_again_in_full(
    weight_settings: Settings, catalog: Catalog
) -> None:
    """A batch whose publish failed is read again (the broker was away): its second delivery
    gives the outputs the first would have, as if the failure never happened."""
    messages = _messages(weight_settings, catalog)
    clean, _ = _run(weight_settings, catalog, messages, batch=64)
    publisher = FakePublisher()
    stage_runner, _ = _runner(weight_settings, catalog, publisher)
    half = len(messages) // 2
    asyncio.run(_feed(stage_runner, messages[:half], batch=64))
    publisher.fail = True
    with pytest.raises(ConnectionError):
        asyncio.run(stage_runner.handle_batch(messages[half : half + 64]))
    publisher.fail = False
    asyncio.run(_feed(stage_runner, messages[half:], batch=64))
    stage_runner.stage.close()
    assert publisher.sent == clean.sent


@pytest.mark.parametrize("mode", ["effects", "all"])
def test_record_spans_cover_every_record_with_an_effect(
    weight_settings: Settings, catalog: Catalog, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """`otel_record_spans`: "effects" opens a `process <topic>` span for each weight packet
    that produced an output or a dead letter (its outputs continue that span's trace, a dead
    letter marks it failed) and none for one that only changed a state, and one for every
    session event; "all", one for every record."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(telemetry, "_tracer", provider.get_tracer("test"))
    settings = weight_settings.with_overrides(otel_record_spans=mode)
    messages = _messages(settings, catalog)
    garbage = SimpleNamespace(**{**vars(messages[5]), "value": b"\x00garbage", "offset": 10_000})
    messages.insert(6, garbage)
    publisher = FakePublisher()
    stage_runner, _ = _runner(settings, catalog, publisher)
    outputs: list[Outbound] = []
    publish = publisher.publish

    async def keep(batch: Iterable[Outbound], stage: str, **kw: Any) -> None:
        outputs.extend(batch)
        await publish(batch, stage, **kw)

    publisher.publish = keep  # type: ignore[method-assign]
    asyncio.run(_feed(stage_runner, messages, batch=16))
    stage_runner.stage.close()
    spans = memory.get_finished_spans()
    assert all(s.name.startswith("process cart.") for s in spans)
    sessions = [m for m in messages if m.topic == settings.topics.sessions]
    named = [s.name for s in spans]
    assert named.count(f"process {settings.topics.sessions}") == len(sessions) > 0
    (failed,) = [s for s in spans if s.status.status_code == StatusCode.ERROR]
    assert failed.attributes is not None
    assert failed.attributes["messaging.kafka.message.offset"] == 10_000
    spanned = {s.attributes["messaging.kafka.message.offset"] for s in spans if s.attributes}
    effects = {o.traceparent for o in outputs}
    assert None not in effects
    span_ids = {f"{s.context.span_id:016x}" for s in spans if s.context}
    # every output continues the trace of its record's span, or of the packet that began it
    assert any(t is not None and t.decode().split("-")[2] in span_ids for t in effects)
    if mode == "all":
        assert len(spans) == len(messages)
    else:
        assert 10_000 in spanned and 0 < len(spans) - len(sessions) < len(messages) / 5
