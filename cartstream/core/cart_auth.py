"""Per-cart message authentication: each cart signs what it publishes, workers verify.

Keys. A store holds one or more *master keys*, each with a key id (two are live during a
rotation). A cart's key is derived from a master key with HKDF-SHA256, bound to the key id and
the cart id, so a cart holds only its own key and a stolen cart cannot sign as another one.

Signature. HMAC-SHA256 over, length-prefixed so no field can run into the next: a version tag,
the key id, the cart id, the topic, the record's Kafka key, its value, its schema header, a
per-cart counter and the signing time. It travels in four headers beside the record
(`AUTH_*`); the Kafka key is the cart id, so a record keyed to cart B cannot carry a signature
made with cart A's key.

Verification (`Verifier.verify`) is pure apart from the replay memory: it says why a record is
not authentic (`AuthFailure`), or which cart and key signed it. Freshness is judged against the
record's broker timestamp, not the worker's clock, so re-processing a backlog after an outage
gives the same answers as processing it live (a real Kafka cluster should stamp cart topics
with `LogAppendTime`, which a rogue producer cannot set; see docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

AUTH_KEY_ID = "cartstream-auth-key"  # the master key's id the cart key was derived from
AUTH_COUNTER = "cartstream-auth-counter"  # per cart, strictly increasing (decimal)
AUTH_TIME = "cartstream-auth-ms"  # signing time, ms since epoch, cart clock (decimal)
AUTH_SIGNATURE = "cartstream-auth-sig"  # HMAC-SHA256, hex
AUTH_HEADERS = (AUTH_KEY_ID, AUTH_COUNTER, AUTH_TIME, AUTH_SIGNATURE)

_VERSION = b"cartstream-auth-v1"
_KEY_INFO = b"cartstream cart key v1"
MIN_MASTER_KEY_BYTES = 32


def derive_cart_key(master_key: bytes, key_id: str, cart_id: str) -> bytes:
    """The 32-byte key of one cart under one master key (HKDF-SHA256)."""
    if len(master_key) < MIN_MASTER_KEY_BYTES:
        raise ValueError(f"a master key needs at least {MIN_MASTER_KEY_BYTES} bytes")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=key_id.encode(),
        info=_KEY_INFO + b"\x00" + cart_id.encode(),
    )
    return hkdf.derive(master_key)


@dataclass(frozen=True)
class Signed:
    """What a signature covers."""

    key_id: str
    cart_id: str
    topic: str
    key: bytes
    value: bytes
    schema: bytes
    counter: int
    time_ms: int

    def message(self) -> bytes:
        parts = (
            _VERSION,
            self.key_id.encode(),
            self.cart_id.encode(),
            self.topic.encode(),
            self.key,
            self.value,
            self.schema,
            str(self.counter).encode(),
            str(self.time_ms).encode(),
        )
        return b"".join(struct.pack(">I", len(p)) + p for p in parts)

    def signature(self, cart_key: bytes) -> str:
        """The hex HMAC-SHA256 a cart puts in `AUTH_SIGNATURE`."""
        return hmac.digest(cart_key, self.message(), "sha256").hex()


class CartSigner:
    """Signs a cart's records (the cart side). One instance per cart key; the counter is the
    signing time in microseconds, kept strictly increasing, so it needs no storage and keeps
    increasing across restarts of the cart (as long as its clock does not run back)."""

    def __init__(self, cart_id: str, key_id: str, cart_key: bytes) -> None:
        self.cart_id, self.key_id, self._key = cart_id, key_id, cart_key
        self._last = 0

    def headers(
        self, topic: str, key: bytes, value: bytes, schema: bytes, now_ms: int | None = None
    ) -> list[tuple[str, bytes]]:
        time_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self._last = counter = max(self._last + 1, time.time_ns() // 1000)
        signed = Signed(self.key_id, self.cart_id, topic, key, value, schema, counter, time_ms)
        sig = signed.signature(self._key)
        return [
            (AUTH_KEY_ID, self.key_id.encode()),
            (AUTH_COUNTER, str(counter).encode()),
            (AUTH_TIME, str(time_ms).encode()),
            (AUTH_SIGNATURE, sig.encode()),
        ]


class AuthFailure(Exception):
    """A record that is not authentic; `reason` says why, without any key material."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Authentic:
    """Who signed a record that verified."""

    cart_id: str
    key_id: str


class Keyring:
    """The store's master keys by id, minus the revoked ones; derives (and caches) cart keys."""

    def __init__(self, master_keys: Mapping[str, bytes], revoked: Iterable[str] = ()) -> None:
        self._masters = dict(master_keys)
        self.revoked = frozenset(revoked)
        self._cart_keys: dict[tuple[str, str], bytes] = {}

    def signer(self, cart_id: str, key_id: str) -> CartSigner:
        return CartSigner(cart_id, key_id, self.cart_key(key_id, cart_id))

    def fleet(self, key_id: str) -> Callable[[str], CartSigner]:
        """One signer per cart, made on first use (a fleet simulator, a bench)."""
        signers: dict[str, CartSigner] = {}

        def signer_of(cart_id: str) -> CartSigner:
            if cart_id not in signers:
                signers[cart_id] = self.signer(cart_id, key_id)
            return signers[cart_id]

        return signer_of

    def cart_key(self, key_id: str, cart_id: str) -> bytes:
        if key_id in self.revoked:
            raise AuthFailure(f"key {key_id!r} is revoked")
        master = self._masters.get(key_id)
        if master is None:
            raise AuthFailure(f"unknown key id {key_id!r}")
        cached = self._cart_keys.get((key_id, cart_id))
        if cached is None:
            cached = self._cart_keys[(key_id, cart_id)] = derive_cart_key(master, key_id, cart_id)
        return cached


SCREEN_CONTEXT = b"cartstream cart-screen v1|"


def screen_token(key_id: str, cart_key: bytes, cart_id: str) -> str:
    """What a cart shows the console to follow its own basket (`/cart/{cart_id}/events`):
    `<key id>.<HMAC-SHA256 of the cart id under the cart's key>`, so only the cart (or whoever
    holds the master key) can watch its basket."""
    mac = hmac.new(cart_key, SCREEN_CONTEXT + cart_id.encode(), hashlib.sha256).hexdigest()
    return f"{key_id}.{mac}"


def check_screen_token(keyring: Keyring, cart_id: str, token: str) -> None:
    """Raises `AuthFailure` unless `token` is the cart's screen token under a live key."""
    key_id, _, _ = token.partition(".")
    expected = screen_token(key_id, keyring.cart_key(key_id, cart_id), cart_id)
    if not hmac.compare_digest(expected, token):
        raise AuthFailure("wrong screen token")


class ReplayMemory:
    """Which counters each cart's records carried, per topic, so that a *new* record with an
    old counter (a replay) is told from the *same* record delivered again (at-least-once: the
    same offset). Bounded: the newest `per_cart` accepted counters of each cart are kept."""

    def __init__(self, per_cart: int = 4096) -> None:
        self.per_cart = per_cart
        self._seen: dict[tuple[str, str], OrderedDict[int, tuple[int, int]]] = {}

    def check(self, topic: str, cart_id: str, counter: int, where: tuple[int, int]) -> None:
        """`where`: (partition, offset). Raises AuthFailure for a replay; else remembers."""
        seen = self._seen.setdefault((topic, cart_id), OrderedDict())
        if counter in seen:
            if seen[counter] == where:
                return  # the same record again
            first = seen[counter][1]
            raise AuthFailure(f"replayed counter {counter} (first seen at offset {first})")
        newest = next(reversed(seen), None)  # counters are kept in increasing order
        if newest is not None and counter < newest:
            raise AuthFailure(f"counter {counter} is older than this cart's newest ({newest})")
        seen[counter] = where
        while len(seen) > self.per_cart:
            seen.popitem(last=False)


class Verifier:
    """Verifies signed cart records (the worker side)."""

    def __init__(self, keyring: Keyring, max_age_s: float, max_skew_s: float) -> None:
        self.keyring = keyring
        self.max_age_ms = int(max_age_s * 1000)
        self.max_skew_ms = int(max_skew_s * 1000)
        self.replays = ReplayMemory()

    def verify(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, bytes],
        broker_ms: int,
        schema: bytes,
    ) -> Authentic:
        missing = [h for h in AUTH_HEADERS if h not in headers]
        if missing:
            raise AuthFailure(f"unsigned: missing {', '.join(missing)}")
        if not key:
            raise AuthFailure("no cart id in the record key")
        try:
            cart_id = key.decode()
            key_id = headers[AUTH_KEY_ID].decode()
            counter = int(headers[AUTH_COUNTER])
            time_ms = int(headers[AUTH_TIME])
            given = headers[AUTH_SIGNATURE].decode()
        except (UnicodeDecodeError, ValueError):
            raise AuthFailure("malformed signature headers") from None
        cart_key = self.keyring.cart_key(key_id, cart_id)
        signed = Signed(key_id, cart_id, topic, key, value, schema, counter, time_ms)
        expected = signed.signature(cart_key)
        if not hmac.compare_digest(expected, given):
            raise AuthFailure(f"bad signature for cart {cart_id!r} under key {key_id!r}")
        if broker_ms - time_ms > self.max_age_ms:
            raise AuthFailure(
                f"stale: signed {(broker_ms - time_ms) / 1000:.0f} s before the broker took it "
                f"(limit {self.max_age_ms / 1000:.0f} s)"
            )
        if time_ms - broker_ms > self.max_skew_ms:
            raise AuthFailure(
                f"signed {(time_ms - broker_ms) / 1000:.0f} s after the broker took it "
                f"(limit {self.max_skew_ms / 1000:.0f} s)"
            )
        self.replays.check(topic, cart_id, counter, (partition, offset))
        return Authentic(cart_id, key_id)
