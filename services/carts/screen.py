"""The cart's screen: it follows its own basket from the console's push gateway (server-sent
events on `/cart/{cart_id}/events`), and measures how long an item took to show.

Latency of a change = when the screen received it - when the weight settled (`step_end_ms`, the
cart's clock; the simulator's carts share the machine's clock). A screen that loses its
connection reconnects; events pushed while it was away are not replayed (the screen then asks
for the whole basket; here it just counts the reconnect).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import connect_sse

from cartstream.core.cart_auth import Keyring, screen_token
from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.schemas.records import STEP_ACTIONS


@dataclass
class ScreenUpdate:
    event: str
    data: dict[str, Any]
    received_ms: int

    @property
    def latency_ms(self) -> int | None:
        """Weight settled -> on the screen (basket changes only)."""
        if self.event != "change":
            return None
        return self.received_ms - int(self.data["step_end_ms"])


@dataclass
class CartScreen:
    console_url: str
    cart_id: str
    token: str = ""
    updates: list[ScreenUpdate] = field(default_factory=list)
    reconnects: int = 0
    connected: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> CartScreen:
        self._thread = threading.Thread(target=self._follow, name=f"screen-{self.cart_id}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self, wait_s: float = 10.0) -> None:
        """Stop following (the thread ends at its next event or ping: within ~5 s)."""
        self.signal_stop()
        if self._thread is not None:
            self._thread.join(timeout=wait_s)

    def signal_stop(self) -> None:
        self._stop.set()

    @property
    def following(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _follow(self) -> None:
        url = f"{self.console_url.rstrip('/')}/cart/{self.cart_id}/events"
        params = {"token": self.token} if self.token else {}
        timeout = httpx.Timeout(10.0, read=20.0)  # the gateway pings every 5 s
        with httpx.Client(timeout=timeout) as client:
            while not self._stop.is_set():
                try:
                    with connect_sse(client, "GET", url, params=params) as source:
                        source.response.raise_for_status()
                        self.connected.set()
                        for sse in source.iter_sse():  # pings come every 5 s
                            if sse.event in ("change", "checkout"):
                                self.updates.append(
                                    ScreenUpdate(sse.event, json.loads(sse.data), now_ms())
                                )
                            if self._stop.is_set():
                                return
                except httpx.ReadTimeout:
                    continue  # no event for a while (pings keep it alive): read on
                except httpx.HTTPError:
                    self.reconnects += 1
                    time.sleep(0.5)

    def changes(self) -> list[ScreenUpdate]:
        return [u for u in self.updates if u.event == "change"]


def follow_fleet(console_url: str, cart_ids: list[str], settings: Settings) -> list[CartScreen]:
    """A screen per simulated cart, connected before it shops. With the store's master keys
    (a fleet simulator holds them), each presents its cart's screen token."""
    auth = settings.cart_auth
    keyring = Keyring(auth.master_key_bytes(), auth.revoked_key_ids) if auth.master_keys else None
    key_id = auth.active_key_id
    screens = []
    for cart in cart_ids:
        token = ""
        if keyring is not None and key_id is not None:
            token = screen_token(key_id, keyring.cart_key(key_id, cart), cart)
        screens.append(CartScreen(console_url, cart, token).start())
    for screen in screens:
        screen.connected.wait(10)
    return screens


def settle_to_screen(screens: list[CartScreen]) -> tuple[int, float | None, float | None]:
    """(changes shown, p50 ms, p99 ms) of weight settle -> screen over the fleet's steps."""
    latencies = sorted(
        float(u.latency_ms or 0)
        for s in screens
        for u in s.changes()
        if u.data["action"] in STEP_ACTIONS
    )
    if not latencies:
        return 0, None, None

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, round(q * (len(latencies) - 1)))]

    return len(latencies), pick(0.5), pick(0.99)
