"""Persist is a Sink: run in memory with the stages, and retried (not skipped) by the Faust
runner while its store is unavailable."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from cartstream.core.settings import Settings
from cartstream.exceptions import StoreUnavailable
from cartstream.models.catalog import Catalog
from cartstream.schemas.codec import AvroCodec
from cartstream.schemas.records import Anomaly, Checkout, CheckoutDecision
from cartstream.services.carts.simulate import SimConfig, cart_events, plan_carts
from cartstream.streams import sink_runner
from cartstream.streams.anomalies import AnomalyStage
from cartstream.streams.persist import PersistSink
from cartstream.streams.publish import Publisher
from cartstream.streams.reason import ReasonStage
from cartstream.streams.reconcile import ReconcileStage
from cartstream.streams.stage import Inbound
from cartstream.streams.testing import MemoryPipeline


class MemoryStore:
    """A CheckoutStore in a dict, idempotent on the record ids like the SQL one."""

    def __init__(self, fail_times: int = 0) -> None:
        self.checkouts: dict[str, Checkout] = {}
        self.anomalies: dict[str, Anomaly] = {}
        self.decisions: dict[str, CheckoutDecision] = {}
        self.fail_times = fail_times
        self.closed = False

    def save_checkout(self, checkout: Checkout) -> bool:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise StoreUnavailable("database unavailable: connection refused")
        new = checkout["checkout_id"] not in self.checkouts
        self.checkouts.setdefault(checkout["checkout_id"], checkout)
        return new

    def save_anomaly(self, anomaly: Anomaly) -> bool:
        new = anomaly["anomaly_id"] not in self.anomalies
        self.anomalies.setdefault(anomaly["anomaly_id"], anomaly)
        return new

    def save_decision(self, decision: CheckoutDecision) -> bool:
        new = decision["decision_id"] not in self.decisions
        self.decisions.setdefault(decision["decision_id"], decision)
        return new

    def describe(self) -> dict[str, str]:
        return {"db.system.name": "memory", "db.namespace": "test"}

    def close(self) -> None:
        self.closed = True


def test_the_sink_persists_every_checkout_once_in_memory(
    settings: Settings, catalog: Catalog
) -> None:
    settings = settings.with_overrides(reason={"mode": "weight"})
    planned = plan_carts(SimConfig(carts=2, sessions=2, seed=5, run_id="p"), catalog)
    events = list(cart_events(planned, catalog, settings.topics, 50.0))
    store = MemoryStore()
    stages = [ReasonStage(settings, catalog), AnomalyStage(settings, catalog)]
    sink = PersistSink(settings, store)
    p = MemoryPipeline(settings, [*stages, ReconcileStage(settings, catalog)], sinks=[sink])
    for _, topic, key, schema, record in events:
        p.publish(topic, key, schema, record)
    p.run()
    requested = {s.session_id for s in planned if s.plan.outcome == "checkout"}
    assert {c["session_id"] for c in store.checkouts.values()} == requested
    published = p.records(settings.topics.checkouts)
    for checkout in published:  # every checkout delivered again, as after a crash
        p.publish(settings.topics.checkouts, checkout["cart_id"], "checkout", checkout)
    p.run()
    assert len(store.checkouts) == len(requested) == sink.written  # written once
    assert len(store.anomalies) == len(p.records(settings.topics.anomalies))
    p.close()
    assert store.closed


def test_a_staff_decision_is_appended_once_however_often_it_comes(
    settings: Settings, catalog: Catalog
) -> None:
    from cartstream.models.decision import decide

    store = MemoryStore()
    sink = PersistSink(settings, store)
    p = MemoryPipeline(settings, [], sinks=[sink])
    ids = {
        "checkout_id": "c",
        "session_id": "s",
        "cart_id": "k",
        "store_id": "x",
        "currency": "USD",
    }
    record = decide(
        ids,
        [],
        "REJECT",
        decision_id="d1",
        staff="alice",
        decided_ms=1,
        previous_status="NEEDS_REVIEW",
        catalog=catalog,
    )
    for _ in range(3):  # delivered again, as after a crash
        p.publish(settings.topics.checkout_decisions, "k", "checkout_decision", record)
    p.run()
    assert list(store.decisions) == ["d1"] and sink.written == 1
    assert not p.records(settings.topics.dead_letters)


class FakeApp:
    """Just enough of a Faust app to build a runner."""

    def __init__(self, rebalancing: bool = False) -> None:
        self.flow_control = self
        self.rebalancing = rebalancing
        self.on_partitions_revoked = SimpleNamespace(connect=lambda handler: None)

    def is_active(self) -> bool:
        return not self.rebalancing

    def topic(self, *names: str, **_: Any) -> tuple[str, ...]:
        return names

    def agent(self, *_: Any, **__: Any) -> Any:
        return lambda fn: fn

    def timer(self, *_: Any, **__: Any) -> Any:
        return lambda fn: fn


def test_the_runner_retries_the_same_record_while_the_store_is_down(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_runner, "RETRY_FIRST_S", 0.01)
    store = MemoryStore(fail_times=3)
    publisher = Publisher(FakeApp(), AvroCodec(), settings.topics.dead_letters)  # type: ignore[arg-type]
    sink = sink_runner.SinkRunner(FakeApp(), PersistSink(settings, store), settings, publisher)  # type: ignore[arg-type]
    checkout: dict[str, Any] = {"checkout_id": "k1", "status": "APPROVED", "requested_ms": 0}
    inbound = Inbound(settings.topics.checkouts, 0, 41, b"cart", 0)
    asyncio.run(sink._apply(checkout, inbound, 0))
    assert store.fail_times == 0 and list(store.checkouts) == ["k1"]
    sink.close()


def test_a_rebalance_ends_the_retries_without_writing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_runner, "RETRY_FIRST_S", 0.01)
    store = MemoryStore(fail_times=1000)
    app = FakeApp(rebalancing=True)
    publisher = Publisher(app, AvroCodec(), settings.topics.dead_letters)  # type: ignore[arg-type]
    sink = sink_runner.SinkRunner(app, PersistSink(settings, store), settings, publisher)  # type: ignore[arg-type]
    checkout: dict[str, Any] = {"checkout_id": "k1", "status": "APPROVED", "requested_ms": 0}
    asyncio.run(sink._apply(checkout, Inbound(settings.topics.checkouts, 0, 41, b"c", 0), 0))
    assert store.checkouts == {} and store.fail_times == 999  # tried once, then handed back
    sink.close()


class RefusingStore(MemoryStore):
    """Refuses checkouts (a constraint an operator's migration added) `refusals` times."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals
        self.tries = 0

    def save_checkout(self, checkout: Checkout) -> bool:
        self.tries += 1
        if self.refusals > 0:
            self.refusals -= 1
            raise ValueError('new row for relation "checkouts" violates check constraint')
        return super().save_checkout(checkout)


class Letters:
    """A publisher that keeps what it is given."""

    def __init__(self) -> None:
        self.codec = AvroCodec()
        self.sent: list[Any] = []

    async def publish(self, outputs: Any, stage: str, **_: Any) -> None:
        self.sent += list(outputs)


def _refusing_runner(
    settings: Settings, store: MemoryStore
) -> tuple[sink_runner.SinkRunner, Letters, list[float]]:
    publisher = Letters()
    sink = sink_runner.SinkRunner(FakeApp(), PersistSink(settings, store), settings, publisher)  # type: ignore[arg-type]
    slept: list[float] = []
    clock = [0.0]

    async def sleep(seconds: float) -> None:  # time passes, instantly
        slept.append(seconds)
        clock[0] += seconds

    sink.sleep = sleep  # type: ignore[method-assign]
    sink.clock = lambda: clock[0]
    return sink, publisher, slept


CHECKOUT: dict[str, Any] = {"checkout_id": "k1", "status": "APPROVED", "requested_ms": 0}


def test_a_refusal_that_ends_is_retried_and_the_checkout_written(settings: Settings) -> None:
    """Issue 38: a persist agent that crashed on an `IntegrityError` had its record acknowledged
    by Faust: 6 of 22 checkouts lost while a CHECK constraint stood for 25 s."""
    store = RefusingStore(refusals=4)
    sink, letters, slept = _refusing_runner(settings, store)
    inbound = Inbound(settings.topics.checkouts, 0, 41, b"cart", 0)
    asyncio.run(sink._apply(CHECKOUT, inbound, 0))
    assert list(store.checkouts) == ["k1"] and store.tries == 5 and letters.sent == []
    assert sum(slept) < settings.sink_refused_retry_s
    sink.close()


def test_a_lasting_refusal_is_dead_lettered_after_the_retry_window(settings: Settings) -> None:
    assert settings.sink_refused_retry_s >= 60  # the product's default: at least a minute
    store = RefusingStore(refusals=10_000)
    sink, letters, slept = _refusing_runner(settings, store)
    inbound = Inbound(settings.topics.checkouts, 2, 41, b"cart-7", 0)
    asyncio.run(sink._apply(CHECKOUT, inbound, 0, b"the checkout's bytes"))
    assert store.checkouts == {}
    assert settings.sink_refused_retry_s <= sum(slept) < settings.sink_refused_retry_s + 20
    (letter,) = letters.sent
    assert letter.topic == settings.topics.dead_letters and letter.key == "cart-7"
    record = letter.record
    assert record["error_type"] == "REFUSED" and "check constraint" in record["reason"]
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (
        settings.topics.checkouts,
        2,
        41,
    )
    assert record["payload"] == b"the checkout's bytes"  # nothing lost: it can be replayed
    sink.close()


def test_an_outage_is_waited_out_however_long(settings: Settings) -> None:
    store = MemoryStore(fail_times=60)  # StoreUnavailable, ten minutes of backoff and more
    sink, letters, slept = _refusing_runner(settings, store)
    asyncio.run(sink._apply(CHECKOUT, Inbound(settings.topics.checkouts, 0, 1, b"c", 0), 0))
    assert list(store.checkouts) == ["k1"] and letters.sent == []
    assert sum(slept) > settings.sink_refused_retry_s
    sink.close()


def test_no_exception_acknowledges_a_record(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error anywhere in the runner reads the record again instead of letting Faust restart
    the agent and acknowledge it."""
    sink, _, slept = _refusing_runner(settings, MemoryStore())
    again: list[Any] = []

    async def read_again(messages: Any) -> None:
        again.extend(messages)

    async def broken(msg: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(sink.in_order, "again", read_again)
    monkeypatch.setattr(sink, "handle", broken)
    msg = SimpleNamespace(topic=settings.topics.checkouts, partition=0, offset=9)
    asyncio.run(sink.guarded(msg))
    assert again == [msg] and slept
    sink.close()
