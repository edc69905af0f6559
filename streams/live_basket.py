"""The live basket: what a cart holds now, answered from the stream state, not the database.

`basket_view` (pure) joins a session's reconcile state (the basket, every applied change with
its confidence) and its anomaly state (the alerts raised so far) into the JSON the cart screen
and the console show. `serve_live_baskets` adds `GET /api/carts/{cart_id}/basket` to a worker's
web server: Faust's topic routing sends the request to the worker that owns the cart's
partition of `basket.changes` (the partition both stages' states of that cart live in), which
answers from its own tables. Invariants:
- a cart's current session is its open one, else the one closed last (None: no session here);
- the view is read-only: it never writes a table or a changelog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import faust

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.streams.anomalies import AnomalyState
from cartstream.streams.reconcile import ReconcileState, checkout_lines

StateLookup = Callable[[str], Any]  # session id -> the stage's typed state, or None


def basket_view(
    catalog: Catalog, basket: ReconcileState, alerts: AnomalyState | None
) -> dict[str, Any]:
    """The session's live basket as JSON (see the console's OpenAPI schema, `LiveBasket`);
    `alerts` None: not known here (`alerts` in the view is None then)."""
    items = checkout_lines(catalog, basket.basket)
    if basket.closed_ms is not None:
        status = (
            "checked_out" if basket.marker and basket.marker.action != "ABANDONED" else "closed"
        )
    elif basket.marker is not None:
        status = "checking_out"
    else:
        status = "shopping"
    last = basket.changes[-1].step_end_ms if basket.changes else None
    return {
        "cart_id": basket.cart_id,
        "store_id": basket.store_id,
        "session_id": basket.session_id,
        "status": status,
        "currency": catalog.currency,
        "items": items,
        "item_count": sum(i["quantity"] for i in items),
        "subtotal_cents": sum(i["line_total_cents"] for i in items),
        "changes": [
            {
                "seq": c.seq,
                "event_id": c.event_id,
                "action": c.action,
                "sku": c.sku,
                "quantity": c.quantity,
                "confidence": c.confidence,
                "step_end_ms": c.step_end_ms,
            }
            for c in basket.changes
        ],
        # None: this worker does not run the anomaly stage (the console fills them in)
        "alerts": [
            {"anomaly_id": a, "description": d}
            for a, d in zip(alerts.anomaly_ids, alerts.reasons, strict=False)
        ]
        if alerts is not None
        else None,
        "last_change_ms": last,
    }


def current_session(states: Iterable[ReconcileState], cart_id: str) -> ReconcileState | None:
    """The cart's open session, else the one closed last."""
    best: ReconcileState | None = None
    for state in states:
        if state.cart_id != cart_id:
            continue
        if best is None or _recency(state) > _recency(best):
            best = state
    return best


def _recency(state: ReconcileState) -> tuple[int, int]:
    if state.closed_ms is None:
        return (1, state.changes[-1].step_end_ms if state.changes else 0)
    return (0, state.closed_ms)


def serve_live_baskets(
    app: faust.App,
    settings: Settings,
    catalog: Catalog,
    baskets: Callable[[], Iterable[ReconcileState]],
    alerts: StateLookup | None,
) -> None:
    """`GET /api/carts/{cart_id}/basket` on this worker's web server, routed to the owner of the
    cart's partition. `baskets`: every reconcile state this worker holds; `alerts`: the anomaly
    state of a session (None when this worker does not run the anomaly stage)."""
    route_topic = app.topic(settings.topics.basket_changes, key_serializer="raw")

    @app.page("/api/carts/{cart_id}/basket")  # type: ignore[untyped-decorator]
    @app.topic_route(route_topic, match_info="cart_id")  # type: ignore[untyped-decorator]
    async def live_basket(web: Any, request: Any, cart_id: str) -> Any:
        state = current_session(baskets(), cart_id)
        if state is None:
            return web.json(
                {"detail": f"no session of cart {cart_id} on this worker's partitions"},
                status=404,
            )
        found = alerts(state.session_id) if alerts is not None else None
        view = basket_view(catalog, state, found)
        if alerts is not None and found is None:
            view["alerts"] = []  # the anomaly stage has seen nothing of this session yet
        return web.json(view)
