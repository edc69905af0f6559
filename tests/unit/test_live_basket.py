"""The live basket view (streams/live_basket.py), the cart screen token, and the console's
push fan-out, without a broker."""

from __future__ import annotations

import asyncio

import pytest

from cartstream.core.cart_auth import AuthFailure, Keyring, check_screen_token, screen_token
from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.services.console.access import safe_next
from cartstream.services.console.gateway import QUEUE_SIZE, BasketGateway, Subscriber
from cartstream.streams.anomalies import AnomalyState
from cartstream.streams.live_basket import basket_view, current_session
from cartstream.streams.reconcile import ChangeNote, Marker, ReconcileState


def state(
    session: str, cart: str = "cart-1", closed: int | None = None, last: int = 0
) -> ReconcileState:
    s = ReconcileState(cart, "store-001", session, closed_ms=closed)
    s.changes.append(ChangeNote(0, "e", "ADD", "X", 1, 0.9, last))
    return s


def test_the_open_session_is_the_current_one_else_the_last_closed() -> None:
    old, new = state("a", closed=1_000), state("b", closed=2_000)
    assert current_session([old, new, state("z", cart="other")], "cart-1") is new
    shopping = state("c", last=500)
    assert current_session([old, shopping, new], "cart-1") is shopping
    assert current_session([old], "cart-9") is None


def test_the_view_prices_the_basket_and_shows_confidences_and_alerts(catalog: Catalog) -> None:
    sku = next(s.sku for s in catalog.skus if not s.sold_by_weight)
    s = ReconcileState("cart-1", "store-001", "sess")
    s.basket.add(catalog, sku, 2, 0.0)
    s.changes.append(ChangeNote(0, "e0", "ADD", sku, 2, 0.42, 123))
    alerts = AnomalyState("cart-1", "store-001", "sess", anomaly_ids=["a1"], reasons=["hidden"])
    view = basket_view(catalog, s, alerts)
    assert view["status"] == "shopping"
    assert (
        view["items"][0]["quantity"] == 2 and view["subtotal_cents"] == 2 * catalog[sku].price_cents
    )
    assert view["changes"][0]["confidence"] == 0.42 and view["last_change_ms"] == 123
    assert view["alerts"] == [{"anomaly_id": "a1", "description": "hidden"}]
    assert basket_view(catalog, s, None)["alerts"] is None  # not known on this worker
    s.marker = Marker(
        "cart-1", "store-001", "sess", "CHECKOUT_REQUESTED", 1, 0.0, False, "fused", 1, ""
    )
    assert basket_view(catalog, s, None)["status"] == "checking_out"
    s.closed_ms = 5
    assert basket_view(catalog, s, None)["status"] == "checked_out"


def test_only_the_cart_holds_its_screen_token() -> None:
    keyring = Keyring({"k1": b"m" * 32, "k0": b"o" * 32}, revoked={"k0"})
    token = screen_token("k1", keyring.cart_key("k1", "cart-1"), "cart-1")
    check_screen_token(keyring, "cart-1", token)
    with pytest.raises(AuthFailure, match="wrong screen token"):
        check_screen_token(keyring, "cart-2", token)  # another cart's token
    with pytest.raises(AuthFailure, match="wrong screen token"):
        check_screen_token(keyring, "cart-1", token[:-2] + "00")
    with pytest.raises(AuthFailure, match="revoked"):
        check_screen_token(keyring, "cart-1", "k0." + token.split(".")[1])


@pytest.mark.parametrize(
    ("asked", "followed"),
    [
        ("/review/x", "/review/x"),
        ("https://evil.example/", "/"),
        ("//evil.example", "/"),
        ("/\\evil", "/"),
        (None, "/"),
        ("review", "/"),
    ],
)
def test_after_login_only_a_path_on_this_site_is_followed(asked: str | None, followed: str) -> None:
    assert safe_next(asked) == followed


def test_the_gateway_pushes_each_event_to_who_wants_it_and_drops_the_oldest_when_full() -> None:
    async def run() -> None:
        gateway = BasketGateway(Settings())
        cart = gateway.subscribe(cart_id="cart-1")
        store = gateway.subscribe(store_id="store-002")
        everyone = gateway.subscribe()
        change = {
            "cart_id": "cart-1",
            "store_id": "store-001",
            "session_id": "s",
            "seq": 0,
            "action": "ADD",
            "sku": "X",
            "quantity": 1,
            "confidence": 0.9,
            "step_end_ms": 1,
            "published_ms": 2,
            "source_produced_ms": 1,
        }
        for n in range(QUEUE_SIZE + 5):
            gateway.apply("basket.changes", {**change, "seq": n}, 3)
        assert store.queue.empty()
        assert cart.queue.qsize() == everyone.queue.qsize() == QUEUE_SIZE
        assert cart.queue.get_nowait()["seq"] == 5  # the first five were dropped
        assert [c.cart_id for c in gateway.carts_of("store-001")] == ["cart-1"]
        assert gateway.carts_of("store-002") == []
        gateway.unsubscribe(cart)
        assert isinstance(everyone, Subscriber) and cart not in gateway.subscribers

    asyncio.run(run())
