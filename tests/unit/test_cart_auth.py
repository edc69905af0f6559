"""Per-cart message authentication: signatures made by the cart, checked by the worker's gate
(`Ingress`) before any stage reads a record, in enforce, report and off mode."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cartstream.core.cart_auth import (
    AUTH_SIGNATURE,
    AuthFailure,
    CartSigner,
    Keyring,
    Verifier,
    derive_cart_key,
)
from cartstream.core.settings import Settings
from cartstream.exceptions import ConfigurationError
from cartstream.models.catalog import Catalog
from cartstream.schemas.codec import SCHEMA_HEADER, AvroCodec
from cartstream.schemas.records import SESSION_EVENT
from cartstream.streams.ingress import Ingress
from cartstream.streams.reason import ReasonStage
from cartstream.streams.stage import Inbound

K1, K2 = "k1-" + "a" * 40, "k2-" + "b" * 40
TOPIC = "cart.sessions"
NOW = 1_790_000_000_000
CODEC = AvroCodec()


def session_event(cart: str, n: int = 0) -> dict[str, Any]:
    return {
        "event_id": f"e-{cart}-{n}",
        "cart_id": cart,
        "store_id": "store-1",
        "session_id": f"s-{cart}",
        "kind": "STARTED",
        "time_ms": NOW - 1000 + n,
    }


def signed(
    signer: CartSigner, cart: str, record: dict[str, Any] | None = None, at: int = NOW
) -> tuple[bytes, bytes, dict[str, bytes]]:
    """(key, value, headers) as the cart client sends them."""
    value = CODEC.encode(SESSION_EVENT, record or session_event(cart))
    headers = dict(CODEC.headers(SESSION_EVENT))
    headers.update(signer.headers(TOPIC, cart.encode(), value, headers[SCHEMA_HEADER], at))
    return cart.encode(), value, headers


def verify(verifier: Verifier, sent: tuple[bytes, bytes, dict[str, bytes]], offset: int,
           broker_ms: int = NOW) -> Any:  # fmt: skip
    key, value, headers = sent
    return verifier.verify(
        TOPIC, 0, offset, key, value, headers, broker_ms, headers.get(SCHEMA_HEADER, b"")
    )


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({"k1": K1.encode(), "k2": K2.encode()})


def test_a_signed_record_verifies_and_names_its_cart(keyring: Keyring) -> None:
    verifier = Verifier(keyring, max_age_s=300, max_skew_s=60)
    ok = verify(verifier, signed(keyring.signer("cart-1", "k1"), "cart-1"), offset=0)
    assert (ok.cart_id, ok.key_id) == ("cart-1", "k1")


def test_cart_keys_differ_per_cart_and_per_key_id() -> None:
    keys = {derive_cart_key(K1.encode(), k, c) for k in ("k1", "k2") for c in ("a", "b")}
    assert len(keys) == 4
    with pytest.raises(ValueError, match="32 bytes"):
        derive_cart_key(b"short", "k1", "a")


@pytest.mark.parametrize(
    ("forge", "why"),
    [
        (lambda h: h.pop(AUTH_SIGNATURE), "unsigned"),
        (lambda h: h.update({AUTH_SIGNATURE: b"00" * 32}), "bad signature"),
        (lambda h: h.update({"cartstream-auth-counter": b"7"}), "bad signature"),
        (lambda h: h.update({"cartstream-auth-key": b"k9"}), "unknown key id"),
        (lambda h: h.update({"cartstream-auth-ms": b"soon"}), "malformed"),
    ],
)
def test_a_forged_record_fails(keyring: Keyring, forge: Any, why: str) -> None:
    key, value, headers = signed(keyring.signer("cart-1", "k1"), "cart-1")
    forge(headers)
    with pytest.raises(AuthFailure, match=why):
        verify(Verifier(keyring, 300, 60), (key, value, headers), offset=0)


def test_a_forger_without_the_store_key_fails(keyring: Keyring) -> None:
    rogue = Keyring({"k1": b"r" * 40}).signer("cart-1", "k1")  # the right key id, a wrong key
    with pytest.raises(AuthFailure, match="bad signature"):
        verify(Verifier(keyring, 300, 60), signed(rogue, "cart-1"), offset=0)


def test_cart_a_key_cannot_sign_for_cart_b(keyring: Keyring) -> None:
    a = keyring.signer("cart-a", "k1")
    with pytest.raises(AuthFailure, match="bad signature for cart 'cart-b'"):
        verify(Verifier(keyring, 300, 60), signed(a, "cart-b"), offset=0)


def test_a_replay_fails_but_a_redelivery_does_not(keyring: Keyring) -> None:
    verifier = Verifier(keyring, 300, 60)
    signer = keyring.signer("cart-1", "k1")
    first, second = signed(signer, "cart-1"), signed(signer, "cart-1", session_event("cart-1", 1))
    verify(verifier, first, offset=10)
    verify(verifier, second, offset=11)
    verify(verifier, first, offset=10)  # the same record delivered again (at-least-once)
    with pytest.raises(AuthFailure, match="replayed counter"):
        verify(verifier, first, offset=12)  # captured and sent again: a new offset
    with pytest.raises(AuthFailure, match="replayed counter"):
        verify(verifier, first, offset=12)  # ... and so on every delivery of it
    fresh = Verifier(keyring, 300, 60)  # a worker that has seen only the later record
    verify(fresh, second, offset=11)
    with pytest.raises(AuthFailure, match="older than this cart's newest"):
        verify(fresh, first, offset=12)


def test_a_stale_or_future_signature_fails(keyring: Keyring) -> None:
    signer = keyring.signer("cart-1", "k1")
    verifier = Verifier(keyring, max_age_s=300, max_skew_s=60)
    with pytest.raises(AuthFailure, match="stale"):
        verify(verifier, signed(signer, "cart-1", at=NOW - 301_000), offset=0)
    with pytest.raises(AuthFailure, match="after the broker took it"):
        verify(verifier, signed(signer, "cart-1", at=NOW + 61_000), offset=1)
    verify(verifier, signed(signer, "cart-1", at=NOW - 299_000), offset=2)


def test_a_rotation_keeps_both_keys_live_until_one_is_revoked(keyring: Keyring) -> None:
    verifier = Verifier(keyring, 300, 60)
    verify(verifier, signed(keyring.signer("old-cart", "k1"), "old-cart"), offset=0)
    verify(verifier, signed(keyring.signer("new-cart", "k2"), "new-cart"), offset=1)
    revoked = Keyring({"k1": K1.encode(), "k2": K2.encode()}, revoked={"k1"})
    verifier = Verifier(revoked, 300, 60)
    with pytest.raises(AuthFailure, match="key 'k1' is revoked"):
        verify(verifier, signed(keyring.signer("old-cart", "k1"), "old-cart"), offset=2)
    verify(verifier, signed(keyring.signer("new-cart", "k2"), "new-cart"), offset=3)


def test_the_counter_keeps_increasing(keyring: Keyring) -> None:
    signer = keyring.signer("cart-1", "k1")
    counters = [int(dict(signer.headers(TOPIC, b"k", b"v", b"s"))["cartstream-auth-counter"])
                for _ in range(100)]  # fmt: skip
    assert counters == sorted(set(counters))


def auth_settings(mode: str, **extra: Any) -> Settings:
    return Settings().with_overrides(
        cart_auth={"mode": mode, "master_keys": {"k1": K1, "k2": K2}, **extra}
    )


def gate(settings: Settings) -> Ingress:
    return Ingress(settings, CODEC, ReasonStage(settings, Catalog.load()))


def inbound(sent: tuple[bytes, bytes, dict[str, bytes]], offset: int) -> Inbound:
    return Inbound(TOPIC, 0, offset, sent[0], NOW, sent[2])


def test_enforce_dead_letters_and_alerts_and_the_stage_sees_nothing() -> None:
    settings = auth_settings("enforce")
    ingress = gate(settings)
    forged = signed(Keyring({"k1": b"r" * 40}).signer("cart-1", "k1"), "cart-1")
    admitted = ingress.admit(inbound(forged, 5), forged[1], NOW)
    assert admitted.record is None
    by_topic = {o.topic: o.record for o in admitted.outputs}
    letter, alert = by_topic["dead-letters"], by_topic["anomalies"]
    assert letter["error_type"] == "AUTH" and letter["reason"].startswith("auth: bad signature")
    assert alert["kind"] == "SPOOFED_EVENT" and alert["cart_id"] == "cart-1"
    assert ingress.admit(inbound(forged, 5), forged[1], NOW).outputs[0].record == alert  # same id
    honest = signed(Keyring({"k1": K1.encode()}).signer("cart-1", "k1"), "cart-1")
    admitted = ingress.admit(inbound(honest, 6), honest[1], NOW)
    assert admitted.record is not None and admitted.outputs == []


def test_a_signed_record_naming_another_cart_is_refused() -> None:
    ingress = gate(auth_settings("enforce"))
    signer = Keyring({"k1": K1.encode()}).signer("cart-a", "k1")
    sent = signed(signer, "cart-a", session_event("cart-b"))  # cart A's packet about cart B
    admitted = ingress.admit(inbound(sent, 0), sent[1], NOW)
    assert admitted.record is None
    assert "names cart 'cart-b', signed for 'cart-a'" in admitted.outputs[0].record["description"]


def test_report_mode_alerts_but_lets_the_record_through() -> None:
    ingress = gate(auth_settings("report"))
    unsigned = (b"cart-1", CODEC.encode(SESSION_EVENT, session_event("cart-1")), {})
    admitted = ingress.admit(inbound(unsigned, 0), unsigned[1], NOW)
    assert admitted.record is not None
    assert [o.record["kind"] for o in admitted.outputs] == ["SPOOFED_EVENT"]
    assert admitted.outputs[0].record["session_id"] == "s-cart-1"  # read after all


def test_off_mode_checks_nothing_and_topics_a_cart_does_not_write_are_not_checked() -> None:
    unsigned = (b"cart-1", CODEC.encode(SESSION_EVENT, session_event("cart-1")), {})
    admitted = gate(Settings()).admit(inbound(unsigned, 0), unsigned[1], NOW)
    assert admitted.record is not None and admitted.outputs == []
    ingress = gate(auth_settings("enforce"))
    assert ingress.signed_topics == {"cart.sessions", "cart.weights"}  # not cart.detections


def test_settings_refuse_an_unusable_key_setup() -> None:
    with pytest.raises(ConfigurationError, match=r"needs cart_auth\.master_keys"):
        Settings().with_overrides(cart_auth={"mode": "enforce"})
    with pytest.raises(ConfigurationError, match="shorter than 32 bytes"):
        Settings().with_overrides(cart_auth={"mode": "report", "master_keys": {"k1": "short"}})
    assert auth_settings("enforce").cart_auth.active_key_id == "k2"
    assert auth_settings("enforce", signing_key_id="k1").cart_auth.active_key_id == "k1"


def test_a_provisioned_cart_signs_for_itself_only() -> None:
    from click.testing import CliRunner

    from cartstream.services.carts.cart_client import signers_from
    from cartstream.services.cli.main import cli

    env = {"CARTSTREAM_CART_AUTH__MASTER_KEYS": json.dumps({"k1": K1, "k2": K2})}
    printed = CliRunner().invoke(cli, ["carts", "key", "cart-7", "--key-id", "k2"], env=env)
    assert printed.exit_code == 0, printed.output
    cart_key = printed.output.strip()
    assert K2 not in printed.output and len(bytes.fromhex(cart_key)) == 32
    cart = Settings().with_overrides(
        cart_auth={"cart_id": "cart-7", "cart_key": cart_key, "signing_key_id": "k2"}
    )
    assert not cart.cart_auth.master_keys  # the cart holds no master key
    signer_of = signers_from(cart)
    own = signer_of("cart-7")
    assert own is not None and signer_of("cart-8") is None
    verifier = Verifier(Keyring({"k1": K1.encode(), "k2": K2.encode()}), 300, 60)
    assert verify(verifier, signed(own, "cart-7"), offset=0).cart_id == "cart-7"
    with pytest.raises(ConfigurationError, match=r"needs cart_auth\.cart_id"):
        Settings().with_overrides(cart_auth={"cart_key": cart_key, "signing_key_id": "k2"})
