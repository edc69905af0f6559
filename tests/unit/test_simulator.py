from __future__ import annotations

import time

import numpy as np

from cartstream.core.settings import TopicSettings
from cartstream.models.catalog import Catalog
from cartstream.models.shopper import ALL_CAMERAS, ANOMALY_KINDS, ShopperProfile, plan_session
from cartstream.services.carts.simulate import SimConfig, cart_events, plan_carts


def test_same_seed_same_sessions(catalog: Catalog) -> None:
    a = plan_session(np.random.default_rng((1, 2, 3)), catalog, 0)
    b = plan_session(np.random.default_rng((1, 2, 3)), catalog, 0)
    c = plan_session(np.random.default_rng((1, 2, 4)), catalog, 0)
    assert a == b and a != c


def test_truth_matches_the_actions(catalog: Catalog) -> None:
    for i in range(30):
        plan = plan_session(np.random.default_rng(i), catalog, i)
        basket: dict[str, int] = {}
        for action in plan.actions:
            sign = 1 if action.action == "ADD" else -1
            basket[action.sku] = basket.get(action.sku, 0) + sign * action.quantity
        assert {k: v for k, v in basket.items() if v} == dict(plan.basket())
        assert all(v > 0 for v in plan.basket().values())


def test_events_are_ordered_backdated_and_closed(catalog: Catalog) -> None:
    topics = TopicSettings()
    config = SimConfig(carts=2, sessions=2, seed=5, run_id="t")
    sessions = plan_carts(config, catalog)
    events = list(cart_events(sessions, catalog, topics, 50.0))
    times = [e[0] for e in events]
    assert times == sorted(times)
    assert max(times) <= time.time() * 1000
    closing = [e[4] for e in events if e[1] == topics.sessions and e[4]["kind"] != "STARTED"]
    assert len(closing) == 4
    for close in closing:
        packets = [
            e[4]
            for e in events
            if e[1] == topics.weights and e[4]["session_id"] == close["session_id"]
        ]
        assert close["last_weight_sequence"] == len(packets) - 1
        assert [p["sequence"] for p in packets] == list(range(len(packets)))


def test_each_weight_packet_names_the_frames_sent_before_it(catalog: Catalog) -> None:
    topics = TopicSettings()
    planned = plan_carts(SimConfig(carts=2, sessions=2, seed=5, run_id="b"), catalog)
    sent: dict[str, int] = {}  # session -> frames published so far
    packets = 0
    for _, topic, _, _, record in cart_events(planned, catalog, topics, 50.0):
        sid = record["session_id"]
        if topic == topics.frames:
            assert record["sequence"] == sent.get(sid, 0)
            sent[sid] = sent.get(sid, 0) + 1
        elif topic == topics.weights:
            assert record["last_frame_sequence"] == sent.get(sid, 0) - 1
            packets += 1
    assert packets > 100 and sum(sent.values()) > 20


def test_sessions_are_tagged_with_their_hard_cases(catalog: Catalog) -> None:
    rng = np.random.default_rng(0)
    plans = [plan_session(rng, catalog, i, ShopperProfile().honest()) for i in range(200)]
    tags = set().union(*(p.scenarios for p in plans))
    assert {"lookalike", "equal_weight", "multi_item", "removal", "produce", "occlusion"} <= tags
    for p in plans:
        hidden = any(a.hidden_from not in (None, ALL_CAMERAS) for a in p.actions)
        assert ("occlusion" in p.scenarios) == hidden
        multi = any(a.quantity > 1 for a in p.actions)
        assert ("multi_item" in p.scenarios) == multi


def test_loss_prevention_cases_are_injected_and_labelled(catalog: Catalog) -> None:
    rng = np.random.default_rng(1)
    plans = [plan_session(rng, catalog, i, ShopperProfile(anomaly_rate=0.1)) for i in range(300)]
    kinds = {p.anomaly for p in plans}
    assert kinds == {None, *ANOMALY_KINDS}
    for p in plans:
        if p.anomaly == "UNRECOGNIZED_ITEM":
            assert any(a.hidden_from == ALL_CAMERAS and a.action == "ADD" for a in p.actions)
        if p.anomaly == "REMOVAL_UNSEEN":
            assert p.actions[-1].action == "REMOVE" and p.actions[-1].hidden_from == ALL_CAMERAS
        if p.anomaly == "ITEM_SWAP":
            (swapped,) = [a for a in p.actions if a.shown_sku]
            assert swapped.shown_sku not in catalog.lookalikes[swapped.sku]
        if p.anomaly == "SCALE_TAMPER":
            assert p.tampers and p.tampers[0].returns
        if p.anomaly == "CHECKOUT_WEIGHT_MISMATCH":
            assert p.outcome == "checkout" and not p.tampers[0].returns
        if p.anomaly == "CAMERA_BLOCKED":
            assert p.dark_camera is not None
        assert ("anomaly" in p.scenarios) == (p.anomaly is not None)


def test_honest_shoppers_are_the_same_sessions_without_the_injection(catalog: Catalog) -> None:
    honest = ShopperProfile().honest()
    for i in range(50):
        with_cases = plan_session(
            np.random.default_rng(i), catalog, i, ShopperProfile(anomaly_rate=0.1)
        )
        plain = plan_session(np.random.default_rng(i), catalog, i, honest)
        assert plain.anomaly is None
        if with_cases.anomaly is None:
            assert with_cases == plain
