"""Server-sent events: the store page's live feed and the cart screen's basket updates.

Both are fed by the one `BasketGateway` consumer. A cart screen proves it is the cart with its
screen token (`core.cart_auth.screen_token`) when cart authentication is on. Every `PING_S` a
`ping` event (no data) keeps the connection alive and lets a client that reads events, not
comments, notice its own stop. The streams end when the gateway stops: uvicorn waits for open
connections before it shuts down, and outside the main thread (the demo, the tests) nothing
else tells a stream the server is stopping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse

from cartstream.core.cart_auth import AuthFailure, check_screen_token
from cartstream.services.console.access import ApiUser
from cartstream.services.console.deps import ConsoleDeps
from cartstream.services.console.gateway import BasketGateway, Subscriber

router = APIRouter(include_in_schema=False)
PING_S = 5


def _gateway(request: Request) -> BasketGateway:
    deps: ConsoleDeps = request.app.state.deps
    if deps.gateway is None:
        raise HTTPException(status_code=503, detail="live updates are off in this console")
    return deps.gateway


def _ping() -> ServerSentEvent:
    return ServerSentEvent(event="ping")


def _stream(request: Request, gateway: BasketGateway, sub: Subscriber) -> EventSourceResponse:
    return EventSourceResponse(
        _events(request, gateway, sub), ping=PING_S, ping_message_factory=_ping
    )


async def _events(
    request: Request, gateway: BasketGateway, sub: Subscriber
) -> AsyncIterator[dict[str, Any]]:
    try:
        while True:
            try:
                event = await asyncio.wait_for(sub.queue.get(), timeout=1.0)
            except TimeoutError:
                if gateway.stopping or await request.is_disconnected():
                    return
                continue
            yield {"event": event["type"], "data": json.dumps(event)}
    finally:
        gateway.unsubscribe(sub)


@router.get("/events")
async def store_events(request: Request, user: ApiUser) -> EventSourceResponse:
    """Changes, alerts and checkouts of the user's store(s), as they happen."""
    gateway = _gateway(request)
    sub = gateway.subscribe(store_id=user.store_id)
    return _stream(request, gateway, sub)


@router.get("/cart/{cart_id}/events")
async def cart_events(request: Request, cart_id: str, token: str = "") -> EventSourceResponse:
    """One cart's basket changes (and its checkout), for the cart's screen."""
    deps: ConsoleDeps = request.app.state.deps
    if deps.keyring is not None:
        try:
            check_screen_token(deps.keyring, cart_id, token)
        except AuthFailure as exc:
            raise HTTPException(status_code=403, detail=f"cart screen: {exc}") from exc
    gateway = _gateway(request)
    sub = gateway.subscribe(cart_id=cart_id)
    return _stream(request, gateway, sub)
