"""Who is asking: staff log in with a password, get a signed session cookie, and see one store
(an admin every store). Every state-changing request also carries the CSRF token (double-submit:
the `csrftoken` cookie echoed in the `X-CSRFToken` header; starlette-csrf checks it).

Failed logins are throttled per name and per address (`LoginThrottle`).

Invariants: a request for another store's cart or checkout is answered 404 as if it did not
exist (nothing about store B leaks to store A); the user is looked up again on every request, so
a removed login stops working at once.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from limits import parse, storage, strategies
from starlette.concurrency import run_in_threadpool

from cartstream.services.storage.staff import StaffDirectory, StaffUser

SESSION_KEY = "username"
FAILED_PER_USER = parse("5/15minute")  # wrong passwords for one name ...
FAILED_PER_CLIENT = parse("30/15minute")  # ... and from one address, before logins are refused


class LoginThrottle:
    """Failed logins counted per username and per client address (the `limits` library, over
    `console.throttle_storage`: memory per process, or e.g. `redis://` shared by replicas).
    Past a limit every login of that name or address is refused (429), the right password too,
    until the window moves on; a good login clears its name's count."""

    def __init__(self, storage_url: str = "memory://") -> None:
        self.limiter = strategies.MovingWindowRateLimiter(storage.storage_from_string(storage_url))

    def allowed(self, username: str, client: str) -> bool:
        return self.limiter.test(FAILED_PER_USER, "user", username) and self.limiter.test(
            FAILED_PER_CLIENT, "client", client
        )

    def failed(self, username: str, client: str) -> None:
        self.limiter.hit(FAILED_PER_USER, "user", username)
        self.limiter.hit(FAILED_PER_CLIENT, "client", client)

    def succeeded(self, username: str) -> None:
        self.limiter.clear(FAILED_PER_USER, "user", username)


class LoginRequired(Exception):
    """A page asked for without a session: the browser is sent to the login page."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def _directory(request: Request) -> StaffDirectory:
    directory: StaffDirectory = request.app.state.deps.staff
    return directory


async def _user(request: Request) -> StaffUser | None:
    username = request.session.get(SESSION_KEY)
    if not isinstance(username, str):
        return None
    user = await run_in_threadpool(_directory(request).get, username)
    if user is None:
        request.session.clear()
    return user


async def api_user(request: Request) -> StaffUser:
    """The logged-in user of an API call (401 without a session)."""
    user = await _user(request)
    if user is None:
        raise HTTPException(status_code=401, detail="log in first (POST /login)")
    return user


async def page_user(request: Request) -> StaffUser:
    """The logged-in user of a page (without one: to the login page, then back)."""
    user = await _user(request)
    if user is None:
        raise LoginRequired(request.url.path)
    return user


ApiUser = Annotated[StaffUser, Depends(api_user)]
PageUser = Annotated[StaffUser, Depends(page_user)]


def in_scope(user: StaffUser, store_id: str, what: str) -> None:
    """404 (as if absent) when the thing belongs to a store the user may not see."""
    if not user.may_see(store_id):
        raise HTTPException(status_code=404, detail=f"no such {what}")


def safe_next(path: str | None) -> str:
    """Only a path on this site (no scheme, no host, no protocol-relative //) is followed."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def login_router(templates: Jinja2Templates, throttle: LoginThrottle) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/") -> Response:
        return templates.TemplateResponse(
            request, "login.html", {"next": safe_next(next), "error": None, "user": None}
        )

    @router.post("/login")
    async def login(
        request: Request,
        username: Annotated[str, Form(max_length=128)],
        password: Annotated[str, Form(max_length=1024)],
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        client = request.client.host if request.client else "unknown"
        if not throttle.allowed(username, client):
            return templates.TemplateResponse(
                request,
                "login.html",
                {
                    "next": safe_next(next),
                    "error": "Too many failed logins: try again in a few minutes.",
                    "user": None,
                },
                status_code=429,
            )
        user = await run_in_threadpool(_directory(request).verify, username, password)
        if user is None:
            throttle.failed(username, client)
            return templates.TemplateResponse(
                request,
                "login.html",
                {"next": safe_next(next), "error": "Wrong username or password.", "user": None},
                status_code=401,
            )
        throttle.succeeded(username)
        request.session.clear()  # a fresh session: no fixation
        request.session[SESSION_KEY] = user.username
        return RedirectResponse(safe_next(next), status_code=303)

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    return router


def login_redirect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(f"/login?next={quote(exc.next_path)}", status_code=303)
