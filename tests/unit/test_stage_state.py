"""Typed stage state: what a table stores, states written by the previous release, versions."""

from __future__ import annotations

from typing import Any

import pytest

from cartstream.core.settings import Settings
from cartstream.models.basket import Basket
from cartstream.models.catalog import Catalog
from cartstream.streams.anomalies import AnomalyStage, AnomalyState
from cartstream.streams.evidence import Sighting
from cartstream.streams.reason import ReasonStage
from cartstream.streams.reason_state import PacketTrace, ReasonState
from cartstream.streams.reconcile import ReconcileStage, ReconcileState
from cartstream.streams.state import StateVersionError

# reason's table value as the release before typed state wrote it (dict, no version)
REASON_V0: dict[str, Any] = {
    "cart_id": "c1",
    "store_id": "s1",
    "session_id": "x1",
    "settle": {
        "window": [1.0, 2.0],
        "settled": True,
        "level": 812.5,
        "level_std": 1.5,
        "level_before": 0.0,
        "level_before_std": 1.5,
        "moving_since_ms": 0,
        "initialised": True,
    },
    "last_seq": 7,
    "gaps": 0,
    "next_change": 2,
    "basket": {"units": {"BEV-COLA-330": 2}, "bags": {"PRO-APPLE": [151.5]}},
    "steps": [
        {
            "start_ms": 1000,
            "end_ms": 1300,
            "delta_g": 350.0,
            "sigma_g": 2.0,
            "level_after_g": 812.5,
            "barrier": 4,
            "source_event_id": "p7",
            "produced_ms": 1400,
            "received_ms": 1500,
            "traceparent": "",
        }  # no packet_traces: written before tracing
    ],
    "vision": {
        "mark": 4,
        "above": [6],
        "sightings": [[900, [[3, 0.9]], 1, 0, True, "f3"]],  # 6 fields: before tracing
        "cameras": [0],
    },
    "pending": None,
    "closed_ms": None,
    "_partition": 3,  # the runner's own field
}


def test_a_state_from_the_previous_release_loads_typed(
    settings: Settings, catalog: Catalog
) -> None:
    stage = ReasonStage(settings, catalog)
    state = stage.load_state(REASON_V0)
    assert isinstance(state, ReasonState)
    assert state.basket == Basket({"BEV-COLA-330": 2}, {"PRO-APPLE": [151.5]})
    assert state.steps[0].packet_traces == [] and state.steps[0].barrier == 4
    assert state.vision.sightings == [Sighting(900, [(3, 0.9)], 1, 0, True, "f3", "")]
    assert state.packets == [] and state.settle.level == 812.5
    stored = stage.dump_state(state)
    assert stored["version"] == 1 and "_partition" not in stored
    assert stage.load_state(stored) == state  # what a table stores reads back the same


def test_older_anomaly_and_reconcile_states_get_the_new_fields(
    settings: Settings, catalog: Catalog
) -> None:
    ids = {"cart_id": "c", "store_id": "s", "session_id": "x"}
    old = {**ids, "next_seq": 3, "basket": {"units": {}, "bags": {}}, "anomaly_ids": ["a"]}
    old |= {"reasons": ["r"], "closed_ms": None}
    anomalies = AnomalyStage(settings, catalog).load_state(old)
    assert anomalies == AnomalyState(**ids, next_seq=3, anomaly_ids=["a"], reasons=["r"])
    old = {**ids, "next_seq": 1, "basket": {"units": {"BEV-COLA-330": 1}, "bags": {}}}
    old |= {"marker": None, "review": None, "closed_ms": None}  # before traces
    reconcile = ReconcileStage(settings, catalog).load_state(old)
    assert reconcile.traces == [] and reconcile.basket.units == {"BEV-COLA-330": 1}
    assert isinstance(reconcile, ReconcileState)


def test_a_state_from_a_newer_release_is_refused(settings: Settings, catalog: Catalog) -> None:
    stage = ReasonStage(settings, catalog)
    newer = {**stage.dump_state(ReasonState("c", "s", "x")), "version": 2}
    with pytest.raises(StateVersionError, match="newer than this release"):
        stage.load_state(newer)


def test_a_corrupt_state_fails_loudly(settings: Settings, catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="last_seq"):
        ReasonStage(settings, catalog).load_state({**REASON_V0, "last_seq": "seven"})


def test_packets_and_sightings_are_stored_as_compact_lists(
    settings: Settings, catalog: Catalog
) -> None:
    state = ReasonState("c", "s", "x", packets=[PacketTrace(1, 2, "tp")])
    state.vision.note(0, Sighting(5, [(1, 0.5)], 1, 0, True, "f0", "tp0"))
    stored = ReasonStage(settings, catalog).dump_state(state)
    assert stored["packets"] == [[1, 2, "tp"]]
    assert stored["vision"]["sightings"] == [[5, [[1, 0.5]], 1, 0, True, "f0", "tp0"]]
