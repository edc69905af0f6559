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
