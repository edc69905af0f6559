"""The console's JSON API (documented in its OpenAPI schema, checked with schemathesis)."""

from __future__ import annotations

import uuid
from typing import Any, cast

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from cartstream.core.ids import now_ms
from cartstream.models.decision import DecisionError, decide
from cartstream.schemas.records import CheckoutItem
from cartstream.services.console.access import ApiUser, in_scope
from cartstream.services.console.api_models import (
    AnomalyOut,
    CartSummary,
    CheckoutOut,
    DecisionAccepted,
    DecisionIn,
    DecisionOut,
    LabelIn,
    LabelSaved,
    LiveBasket,
    Problem,
    ReviewEntry,
)
from cartstream.services.console.deps import ConsoleDeps
from cartstream.services.console.live import LiveBasketUnavailable
from cartstream.services.storage.db import CheckoutRow
from cartstream.services.storage.reviews import CheckoutDetail

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Not logged in."},
    403: {"description": "CSRF token missing or wrong (state-changing requests)."},
    404: {"model": Problem, "description": "No such thing in the stores you may see."},
}
router = APIRouter(prefix="/api", responses=ERRORS)


def deps_of(request: Request) -> ConsoleDeps:
    deps: ConsoleDeps = request.app.state.deps
    return deps


def ms_of(row_time: Any) -> int:
    return int(row_time.timestamp() * 1000)


def entry(row: CheckoutRow, final_status: str) -> ReviewEntry:
    return ReviewEntry(
        checkout_id=row.checkout_id,
        cart_id=row.cart_id,
        store_id=row.store_id,
        session_id=row.session_id,
        requested_ms=ms_of(row.requested_at),
        status=row.status,
        final_status=final_status,
        item_count=row.item_count,
        subtotal_cents=row.subtotal_cents,
        review_reasons=list(row.review_reasons),
    )


def items_of(row: CheckoutRow) -> list[CheckoutItem]:
    return [
        {
            "sku": i.sku,
            "name": i.name,
            "quantity": i.quantity,
            "unit_price_cents": i.unit_price_cents,
            "grams": i.grams,
            "sold_by_weight": i.sold_by_weight,
            "line_total_cents": i.line_total_cents,
        }
        for i in row.items
    ]


def final_items(detail: CheckoutDetail) -> list[CheckoutItem]:
    """The items after the latest decision (the pipeline's when none was made): what a new
    decision starts from, so approving a corrected checkout keeps the correction."""
    if detail.decisions:
        return [cast(CheckoutItem, dict(i)) for i in detail.decisions[-1].items]
    return items_of(detail.checkout)


def checkout_out(detail: CheckoutDetail) -> CheckoutOut:
    row = detail.checkout
    final = final_items(detail)
    return CheckoutOut(
        **entry(row, detail.final_status).model_dump(),
        currency=row.currency,
        items=items_of(row),
        final_items=final,
        final_subtotal_cents=sum(i["line_total_cents"] for i in final),
        measured_grams=row.measured_grams,
        expected_grams=row.expected_grams,
        anomalies=[
            AnomalyOut(
                anomaly_id=a.anomaly_id,
                kind=a.kind,
                severity=a.severity,
                description=a.description,
                detected_ms=ms_of(a.detected_at),
            )
            for a in detail.anomalies
        ],
        decisions=[
            DecisionOut(
                decision_id=d.decision_id,
                action=d.action,
                final_status=d.final_status,
                previous_status=d.previous_status,
                staff=d.staff,
                decided_ms=ms_of(d.decided_at),
                item_count=d.item_count,
                subtotal_cents=d.subtotal_cents,
                changes=d.changes,
                note=d.note,
            )
            for d in detail.decisions
        ],
    )


async def scoped_detail(deps: ConsoleDeps, user: ApiUser, checkout_id: str) -> CheckoutDetail:
    detail = await run_in_threadpool(deps.reviews.detail, checkout_id)
    if detail is None:
        raise HTTPException(status_code=404, detail="no such checkout")
    in_scope(user, detail.checkout.store_id, "checkout")
    return detail


@router.get(
    "/carts/{cart_id}/basket",
    response_model=LiveBasket,
    responses={503: {"model": Problem, "description": "No worker answered."}},
)
async def live_basket(request: Request, cart_id: str, user: ApiUser) -> Any:
    """The cart's current basket from the live stream state (routed to the worker that owns
    the cart's partition), with each change's confidence and the open alerts."""
    try:
        basket = await deps_of(request).live.basket(cart_id)
    except LiveBasketUnavailable as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    if basket is None:
        raise HTTPException(status_code=404, detail="no such cart")
    in_scope(user, str(basket["store_id"]), "cart")
    if basket.get("alerts") is None:  # the owner does not run the anomaly stage (split roles)
        gateway = deps_of(request).gateway
        seen = gateway.alerts_of(user.store_id) if gateway else []
        basket["alerts"] = [
            {"anomaly_id": a["anomaly_id"], "description": a["description"]}
            for a in reversed(seen)
            if a["session_id"] == basket["session_id"]
        ]
    return basket


@router.get("/carts", response_model=list[CartSummary])
async def carts(request: Request, user: ApiUser) -> Any:
    """Carts seen on the stream since the console started, in the user's stores."""
    gateway = deps_of(request).gateway
    return [c.__dict__ for c in gateway.carts_of(user.store_id)] if gateway else []


@router.get("/review", response_model=list[ReviewEntry])
async def review_queue(request: Request, user: ApiUser) -> Any:
    """Checkouts whose final status is still NEEDS_REVIEW, newest first."""
    rows = await run_in_threadpool(deps_of(request).reviews.queue, user.store_id)
    return [entry(row, final) for row, final in rows]


@router.get("/checkouts/{checkout_id}", response_model=CheckoutOut)
async def checkout(request: Request, checkout_id: str, user: ApiUser) -> Any:
    """A checkout with its items, alerts and decision trail (oldest first)."""
    return checkout_out(await scoped_detail(deps_of(request), user, checkout_id))


@router.post(
    "/checkouts/{checkout_id}/decision",
    response_model=DecisionAccepted,
    status_code=202,
    responses={422: {"description": "The decision cannot be made as asked."}},
)
async def decision(request: Request, checkout_id: str, body: DecisionIn, user: ApiUser) -> Any:
    """Approve, correct or reject a checkout: published on `checkout.decisions` (acknowledged by
    the broker before this answers); persist then records it and the final status."""
    deps = deps_of(request)
    detail = await scoped_detail(deps, user, checkout_id)
    row = detail.checkout
    try:
        record = decide(
            {
                "checkout_id": row.checkout_id,
                "session_id": row.session_id,
                "cart_id": row.cart_id,
                "store_id": row.store_id,
                "currency": row.currency,
            },
            final_items(detail),
            body.action,
            decision_id=body.decision_id,
            staff=user.username,
            decided_ms=now_ms(),
            previous_status=detail.final_status,
            catalog=deps.catalog,
            quantities=body.quantities,
            note=body.note,
        )
    except DecisionError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    await run_in_threadpool(deps.publisher.publish, record)
    return DecisionAccepted(
        decision_id=record["decision_id"],
        checkout_id=record["checkout_id"],
        final_status=record["final_status"],
        subtotal_cents=record["subtotal_cents"],
        published_to=deps.settings.topics.checkout_decisions,
    )


@router.post(
    "/labels",
    response_model=LabelSaved,
    status_code=201,
    responses={422: {"description": "Unknown SKU."}},
)
async def label(request: Request, body: LabelIn, user: ApiUser) -> Any:
    """Confirm or correct the SKU on a frame the detector was unsure of (a verified label for
    `models train-detector --extra`, through `cartstream review labels`)."""
    deps = deps_of(request)
    frame = deps.gateway.unsure_frame(body.frame_event_id) if deps.gateway else None
    if frame is None:
        raise HTTPException(status_code=404, detail="no such frame awaiting a label")
    in_scope(user, str(frame["store_id"]), "frame")
    boxes = sorted(frame["boxes"], key=lambda b: -b["score"])
    predicted = boxes[0]["sku"] if boxes else None
    sku = predicted if body.verdict == "CONFIRMED" else body.sku
    if body.verdict == "EMPTY":
        sku = None
    elif sku is None or sku not in deps.catalog:
        raise HTTPException(status_code=422, detail=f"unknown SKU {sku!r}")
    labelled = [
        {k: b[k] for k in ("x0", "y0", "x1", "y1")} | {"sku": sku, "score": 1.0}
        for b in boxes[:1]
        if sku is not None
    ]
    label_id = str(uuid.uuid4())
    await run_in_threadpool(
        deps.reviews.save_label,
        {
            "label_id": label_id,
            "frame_event_id": frame["frame_event_id"],
            "cart_id": frame["cart_id"],
            "store_id": frame["store_id"],
            "session_id": frame["session_id"],
            "camera_id": frame["camera_id"],
            "capture_time_ms": frame["capture_time_ms"],
            "verdict": body.verdict,
            "predicted_sku": predicted,
            "sku": sku,
            "boxes": labelled,
            "jpeg": frame["jpeg"],
            "staff": user.username,
        },
    )
    return LabelSaved(
        label_id=label_id, frame_event_id=frame["frame_event_id"], sku=sku, verdict=body.verdict
    )
