"""The console's pages: the store view, the review queue and a checkout's review, labelling.

Server-rendered (Jinja2); `static/console.js` adds the live feed (server-sent events) and sends
forms as JSON with the CSRF header. Frames are served only through a checkout or a labelling
entry the user may see.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from cartstream.services.console.access import PageUser, in_scope
from cartstream.services.console.api import checkout_out, deps_of, ms_of, scoped_detail
from cartstream.services.console.evidence import ChangeEvidence
from cartstream.services.storage.staff import StaffUser

TRACE_W, TRACE_H = 560, 120


def weight_trace(change: ChangeEvidence) -> dict[str, Any]:
    """The weight samples around a step as SVG polyline points, with the step's span marked."""
    samples = change.weights
    if len(samples) < 2:
        return {"points": "", "step": None, "low": 0, "high": 0}
    t0, t1 = samples[0][0], samples[-1][0]
    low = min(g for _, g in samples)
    high = max(g for _, g in samples)
    span_t, span_g = max(1, t1 - t0), max(1.0, high - low)

    def x(t: int) -> float:
        return round((t - t0) / span_t * TRACE_W, 1)

    def y(g: float) -> float:
        return round(TRACE_H - 5 - (g - low) / span_g * (TRACE_H - 10), 1)

    c = change.change
    return {
        "points": " ".join(f"{x(t)},{y(g)}" for t, g in samples),
        "step": (x(max(t0, c["step_start_ms"])), x(min(t1, c["step_end_ms"]))),
        "low": round(low),
        "high": round(high),
    }


def pages_router(templates: Jinja2Templates) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def render(request: Request, name: str, user: StaffUser, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, {"user": user, **context})

    @router.get("/", response_class=HTMLResponse)
    async def store(request: Request, user: PageUser) -> Response:
        deps = deps_of(request)
        gateway = deps.gateway
        alerts = gateway.alerts_of(user.store_id) if gateway else []
        return render(
            request,
            "store.html",
            user,
            carts=gateway.carts_of(user.store_id) if gateway else [],
            alerts=alerts[:30],
        )

    @router.get("/review", response_class=HTMLResponse)
    async def queue(request: Request, user: PageUser) -> Response:
        reviews = deps_of(request).reviews
        waiting = await run_in_threadpool(reviews.queue, user.store_id)
        decided = await run_in_threadpool(reviews.decided, user.store_id)
        return render(request, "review_queue.html", user, waiting=waiting, decided=decided)

    @router.get("/review/{checkout_id}", response_class=HTMLResponse)
    async def review(request: Request, checkout_id: str, user: PageUser) -> Response:
        deps = deps_of(request)
        detail = await scoped_detail(deps, user, checkout_id)
        row = detail.checkout
        evidence = await run_in_threadpool(
            deps.evidence.session, row.cart_id, row.session_id, ms_of(row.requested_at)
        )
        return render(
            request,
            "review.html",
            user,
            checkout=checkout_out(detail),
            evidence=[(c, weight_trace(c)) for c in evidence.changes],
            catalog=deps.catalog,
            decision_id=uuid.uuid4().hex,
            trace_size=(TRACE_W, TRACE_H),
        )

    @router.get("/review/{checkout_id}/frames/{frame_event_id}.jpg")
    async def review_frame(
        request: Request, checkout_id: str, frame_event_id: str, user: PageUser
    ) -> Response:
        deps = deps_of(request)
        row = (await scoped_detail(deps, user, checkout_id)).checkout
        evidence = await run_in_threadpool(
            deps.evidence.session, row.cart_id, row.session_id, ms_of(row.requested_at)
        )
        frame = evidence.frame(frame_event_id)
        if frame is None or frame.jpeg is None:
            raise HTTPException(status_code=404, detail="no such frame")
        return Response(frame.jpeg, media_type="image/jpeg", headers=_private_cache)

    @router.get("/labels", response_class=HTMLResponse)
    async def labels(request: Request, user: PageUser) -> Response:
        deps = deps_of(request)
        frames = deps.gateway.unsure_frames(user.store_id) if deps.gateway else []
        done = await run_in_threadpool(deps.reviews.labelled_frames, user.store_id)
        waiting = [f for f in frames if f["frame_event_id"] not in done]
        return render(request, "labels.html", user, frames=waiting[:60], catalog=deps.catalog)

    @router.get("/labels/frames/{frame_event_id}.jpg")
    async def label_frame(request: Request, frame_event_id: str, user: PageUser) -> Response:
        gateway = deps_of(request).gateway
        frame = gateway.unsure_frame(frame_event_id) if gateway else None
        if frame is None:
            raise HTTPException(status_code=404, detail="no such frame")
        in_scope(user, str(frame["store_id"]), "frame")
        return Response(frame["jpeg"], media_type="image/jpeg", headers=_private_cache)

    return router


_private_cache = {"Cache-Control": "private, max-age=600"}
