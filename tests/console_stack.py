"""A running console on the real broker and Postgres, with two workers (web on) in one group:
what the console's integration and browser tests share."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from cartstream.core.settings import Settings
from cartstream.services.console.app import ConsoleThread
from cartstream.services.console.deps import ConsoleDeps
from cartstream.services.kafka.broker import free_port
from cartstream.services.kafka.topics import ensure_topics
from cartstream.services.storage.repository import make_engine
from cartstream.services.storage.staff import StaffDirectory
from cartstream.services.tools.harness import WorkerProcess, worker_env

PASSWORD = "correct horse battery"
USERS = {"alice": "store-001", "bob": "store-002", "root": None}  # root: an admin


@dataclass
class ConsoleStack:
    settings: Settings
    url: str
    worker_urls: list[str]
    deps: ConsoleDeps
    workers: list[WorkerProcess]

    def login(self, username: str) -> httpx.Client:
        """An HTTP client logged in as `username`, sending the CSRF header on every request."""
        client = httpx.Client(base_url=self.url, timeout=30, follow_redirects=False)
        client.get("/login")
        token = client.cookies["csrftoken"]
        client.headers["X-CSRFToken"] = token
        answer = client.post("/login", data={"username": username, "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        return client


@contextmanager
def console_stack(
    base: Settings, pg_url: str, tmp_path: Path, secure_cookies: bool = False
) -> Iterator[ConsoleStack]:
    """`secure_cookies`: as in production (a browser sends them to http://127.0.0.1 too;
    httpx does not, so the API tests turn them off)."""
    ensure_topics(base)
    engine = make_engine(pg_url)
    staff = StaffDirectory(engine)
    for name, store in USERS.items():
        staff.set_user(name, PASSWORD, store)
    engine.dispose()
    workers: list[WorkerProcess] = []
    urls: list[str] = []
    try:
        for n in range(2):
            ready = tmp_path / f"ready-{n}"
            env = worker_env(base, base.app_id, pg_url, ready)
            workers.append(WorkerProcess(env, tmp_path / f"worker-{n}.log", web=True))
            urls.append(env["CARTSTREAM_WEB_ADVERTISED_URL"])
            workers[-1].wait_ready(ready, timeout_s=90)
        port = free_port()
        settings = base.with_overrides(
            database_url=pg_url,
            console={
                **base.console.model_dump(),
                "port": port,
                "worker_urls": urls,
                "secure_cookies": secure_cookies,
                "session_key": "a test key of enough length, not secret",
            },
        )
        running = ConsoleThread(settings).start()
        try:
            yield ConsoleStack(settings, running.url, urls, running.deps, workers)
        finally:
            # open live streams (cart screens, store pages) must not hold the server up
            assert running.stop(wait_s=10), "the console did not stop with streams open"
    finally:
        for w in workers:
            w.stop()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)
