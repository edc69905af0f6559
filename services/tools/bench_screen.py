"""`cartstream bench screen`: weight settle → cart screen under load, through the console.

One point of `bench pipeline`'s full mode (N carts at real-time pace, one worker with every
role) with the console's push gateway running beside it and one `CartScreen` per cart
following its basket over server-sent events, all subscribed before the first send. Per basket
change a screen receives: settle→screen = received - the step's settle time (`step_end_ms`,
cart clock; the load generator's carts share this machine's clock), and last packet→screen =
received - when the cart sent the weight packet that completed the step (the part the cloud
side owns). The console and the screens run in this bench's process, on the same 2 cores as
the broker, the worker and the generator.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from cartstream.core.settings import Settings
from cartstream.schemas.records import STEP_ACTIONS
from cartstream.services.carts.screen import CartScreen
from cartstream.services.console.app import ConsoleThread
from cartstream.services.kafka.broker import free_port
from cartstream.services.tools.doc_sections import write_section

TARGET_P99_MS = 500.0
SECTION = "screen"


class ScreenWatch:
    """The console and every cart's screen, started once the load generator is armed."""

    def __init__(self) -> None:
        self.screens: list[CartScreen] = []
        self._console: ConsoleThread | None = None
        self.error: str | None = None

    def start(self, load_folder: Path, settings: Settings, database_url: str) -> None:
        armed = load_folder / "armed.json"
        deadline = time.monotonic() + 900
        while not armed.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        plan = json.loads(armed.read_text())
        port = free_port()
        s = settings.with_overrides(
            database_url=database_url,
            console={**settings.console.model_dump(), "port": port, "secure_cookies": False},
        )
        self._console = ConsoleThread(s).start()
        url = f"http://127.0.0.1:{port}"
        self.screens = [CartScreen(url, cart).start() for cart in plan["cart_ids"]]
        connected = sum(screen.connected.wait(30) for screen in self.screens)
        if time.time() * 1000 > plan["start_ms"]:
            self.error = f"{connected} screens connected only after the first send"

    def stop(self) -> None:
        """Idempotent: the screens told to stop, the console stopped (which ends their
        connections), then the screens' threads joined."""
        for screen in self.screens:
            screen.signal_stop()
        if self._console is not None:
            self._console.stop()
            self._console = None
        deadline = time.monotonic() + 10
        for screen in self.screens:
            screen.stop(wait_s=max(0.0, deadline - time.monotonic()))

    def latencies(self) -> dict[str, list[float]]:
        settle, packet, push = [], [], []
        for screen in self.screens:
            for update in screen.changes():
                if update.data["action"] not in STEP_ACTIONS:
                    continue
                settle.append(float(update.latency_ms or 0))
                packet.append(float(update.received_ms - update.data["source_produced_ms"]))
                push.append(float(update.received_ms - update.data["published_ms"]))
        return {
            "settle→screen": settle,
            "last packet→screen": packet,
            "change published→screen": push,
        }


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(values)
    return {
        "n": len(values),
        **{f"p{q}": round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)},
        "max": round(float(a.max()), 1),
    }


def report(
    mode: str,
    carts: int,
    spreads: dict[str, dict[str, Any]],
    point: Any,
    watch: ScreenWatch,
    command: str,
) -> str:
    settle = spreads["settle→screen"]
    met = settle["p99"] is not None and settle["p99"] < TARGET_P99_MS
    lines = [
        f"## Weight settle → cart screen (`cartstream bench screen`): {mode} mode, {carts} carts",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')} (2 cores shared by the broker,",
        "the worker, Postgres, the load generator, the console and the screens).",
        f"{carts} carts at real-time pace, each followed by its own screen (server-sent events",
        "from the console's one gateway consumer). "
        + (
            "Frames are detected by the worker on CPU, on the same 2 cores."
            if mode == "full"
            else "Detections are replayed (as when detect runs on a GPU or its own nodes);"
            " the worker runs reason, anomalies, reconcile and persist."
        )
        + " Milliseconds per basket change:",
        "",
        "| measure | changes | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {name} | {v['n']:,} | {v['p50']} | {v['p95']} | {v['p99']} | {v['max']} |"
            for name, v in spreads.items()
        ],
        "",
        f"- target p99 settle→screen < {TARGET_P99_MS:.0f} ms at 100 carts: "
        + ("**met**" if met else "**missed**"),
        f"- the pipeline at this load: generator kept pace: {point.load.kept_pace}; "
        f"lag drained {point.drained_s} s after the last send; worker CPU "
        f"{100 * point.cpu.get('worker', 0):.0f} % of a core",
        f"- screens: {len(watch.screens)}, reconnects "
        f"{sum(s.reconnects for s in watch.screens)}" + (f"; {watch.error}" if watch.error else ""),
        "",
        "settle→screen includes what happens on the cart before the cloud sees the step (the",
        "packet holding the settle is sent when it is full); last packet→screen is the cloud",
        "side (detect of the frames before the step, reason, the broker, the gateway, the push);",
        "change published→screen is the console's part alone (broker, gateway, SSE).",
    ]
    return "\n".join(lines)


def write(doc: Path, mode: str, text: str) -> None:
    """Each mode's result is its own section of the page (a later run replaces its mode's)."""
    write_section(doc, f"{SECTION}-{mode}", text)
