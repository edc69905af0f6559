"""The console's ASGI app: routes, sessions, CSRF, security headers, and its life cycle.

`create_app(deps)` takes everything it uses (tests inject their own); `build_deps(settings)`
makes the real ones (the database, the workers' live baskets, the broker's gateway and the
decision producer); `serve(settings)` runs it with uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import Response
from starlette_csrf.middleware import CSRFMiddleware

from cartstream.core.cart_auth import Keyring
from cartstream.core.settings import Settings
from cartstream.exceptions import ConfigurationError
from cartstream.models.catalog import Catalog
from cartstream.services.console import api, push
from cartstream.services.console.access import (
    LoginRequired,
    LoginThrottle,
    login_redirect,
    login_router,
)
from cartstream.services.console.decisions import DecisionPublisher
from cartstream.services.console.deps import ConsoleDeps
from cartstream.services.console.evidence import EvidenceReader
from cartstream.services.console.gateway import BasketGateway
from cartstream.services.console.live import LiveBaskets
from cartstream.services.console.pages import pages_router
from cartstream.services.storage.repository import make_engine
from cartstream.services.storage.reviews import ReviewStore
from cartstream.services.storage.staff import StaffDirectory

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _package_dir(name: str) -> str:
    return str(resources.files("cartstream.services.console") / name)


def create_app(deps: ConsoleDeps) -> FastAPI:
    settings = deps.settings.console
    secret = (
        settings.session_key.get_secret_value()
        if settings.session_key is not None
        else secrets.token_urlsafe(32)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if deps.gateway is not None:
            deps.gateway.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            if deps.gateway is not None:
                deps.gateway.stop()
            await deps.live.close()
            deps.publisher.close()

    app = FastAPI(
        title="cartstream console",
        version="1",
        description="Live baskets, the review queue and labelling for store staff. Every "
        "call needs a logged-in session (POST /login); state-changing calls also need the "
        "CSRF token: the `csrftoken` cookie's value in the `X-CSRFToken` header.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.deps = deps
    templates = Jinja2Templates(directory=_package_dir("templates"))
    templates.env.filters["money"] = lambda cents: f"{cents / 100:,.2f}"
    app.include_router(login_router(templates, LoginThrottle(settings.throttle_storage)))
    app.include_router(api.router)
    app.include_router(push.router)
    app.include_router(pages_router(templates))
    app.mount("/static", StaticFiles(directory=_package_dir("static")), name="static")
    app.add_exception_handler(LoginRequired, login_redirect)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: object) -> Response:
        response: Response = await call_next(request)  # type: ignore[operator]
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    # the outermost middleware is added last: sessions, then CSRF around everything
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie="cartstream_session",
        max_age=settings.session_max_age_s,
        same_site="strict",
        https_only=settings.secure_cookies,
    )
    app.add_middleware(
        CSRFMiddleware,
        secret=secret,
        cookie_secure=settings.secure_cookies,
        cookie_samesite="strict",
        header_name="x-csrftoken",
    )
    return app


def build_deps(settings: Settings) -> ConsoleDeps:
    engine = make_engine(settings.database_url.get_secret_value())
    auth = settings.cart_auth
    keyring = Keyring(auth.master_key_bytes(), auth.revoked_key_ids) if auth.mode != "off" else None
    return ConsoleDeps(
        settings=settings,
        catalog=Catalog.load(settings.catalog_path),
        staff=StaffDirectory(engine),
        reviews=ReviewStore(engine),
        live=LiveBaskets(settings.console.worker_urls, settings.console.worker_timeout_s),
        publisher=DecisionPublisher(settings),
        evidence=EvidenceReader(settings),
        gateway=BasketGateway(settings),
        keyring=keyring,
    )


def serve(settings: Settings) -> None:
    """Run the console until stopped (SIGTERM/SIGINT end it cleanly)."""
    import uvicorn

    app = create_app(build_deps(settings))
    c = settings.console
    log.info("console on http://%s:%d", c.host, c.port)
    uvicorn.run(app, host=c.host, port=c.port, log_level="warning", proxy_headers=True)


class ConsoleThread:
    """The console served from a thread of this process (the demo, the benches, the tests):
    `start()` returns once it answers and its gateway follows the topics; `stop()` ends it."""

    def __init__(self, settings: Settings, deps: ConsoleDeps | None = None) -> None:
        import uvicorn

        self.deps = deps or build_deps(settings)
        c = settings.console
        self.url = f"http://{c.host}:{c.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(self.deps), host=c.host, port=c.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, name="console", daemon=True)

    def start(self, timeout_s: float = 60.0) -> ConsoleThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ConfigurationError(f"the console did not start on {self.url}")
            time.sleep(0.05)
        if self.deps.gateway is not None and not self.deps.gateway.ready.wait(timeout_s):
            raise ConfigurationError("the console's gateway did not reach the topics")
        return self

    def stop(self, wait_s: float = 20.0) -> bool:
        """The gateway first: its live streams end, and uvicorn (waiting for open connections
        before it stops) can. True: stopped within `wait_s`."""
        if self.deps.gateway is not None:
            self.deps.gateway.stop()
        self.server.should_exit = True
        self.thread.join(timeout=wait_s)
        return not self.thread.is_alive()
