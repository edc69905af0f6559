"""Running a worker as a child process: what the demo, the benches and the tests share.

`worker_env` gives the child the parent's settings as `CARTSTREAM_*` variables (the run's broker,
database, app id, a free web port, a ready file); `WorkerProcess` starts `cartstream worker`,
waits for its ready file and stops it (SIGTERM, or SIGKILL for crash tests), always reaping it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cartstream.core.settings import Settings
from cartstream.core.topics import tick_topic_name
from cartstream.exceptions import CartstreamError
from cartstream.services.kafka.broker import free_port
from cartstream.streams.worker import stateful_roles


def run_worker_to_exit(env: dict[str, str], timeout_s: float = 120.0) -> tuple[int, str]:
    """`cartstream worker` run to its end, for a start-up that must fail: (exit code, output)."""
    done = subprocess.run(
        [sys.executable, "-m", "cartstream", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


class WorkerProcess:
    """`cartstream worker` as a child process with its own settings environment."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        roles: str = "all",
        web: bool = False,
        log_level: str = "warning",
    ) -> None:
        self.log_path = log_path
        # where its web server answers (live baskets), when it has one
        self.web_url = env.get("CARTSTREAM_WEB_ADVERTISED_URL") if web else None
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cartstream",
                "--log-level",
                log_level,
                "worker",
                "--roles",
                roles,
                "--web" if web else "--no-web",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, ready_file: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready_file.exists():
            if not self.alive():
                raise CartstreamError(f"worker exited during start-up; see {self.log_path}")
            if time.monotonic() > deadline:
                raise CartstreamError(
                    f"worker not ready after {timeout_s:.0f} s; see {self.log_path}"
                )
            time.sleep(0.1)

    def stop(self, kill: bool = False, timeout_s: float = 20.0) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()


def kafka_security_env(settings: Settings) -> dict[str, str]:
    """How to reach the broker securely, as CARTSTREAM_KAFKA__* variables."""
    kafka = settings.kafka
    env: dict[str, str] = {"CARTSTREAM_KAFKA__SECURITY_PROTOCOL": kafka.security_protocol}
    if kafka.ssl_cafile is not None:
        env["CARTSTREAM_KAFKA__SSL_CAFILE"] = str(kafka.ssl_cafile)
    if kafka.sasl_mechanism is not None:
        env["CARTSTREAM_KAFKA__SASL_MECHANISM"] = kafka.sasl_mechanism
    if kafka.sasl_username is not None:
        env["CARTSTREAM_KAFKA__SASL_USERNAME"] = kafka.sasl_username
    if kafka.sasl_password is not None:
        env["CARTSTREAM_KAFKA__SASL_PASSWORD"] = kafka.sasl_password.get_secret_value()
    return env


def enforced_cart_auth(settings: Settings) -> dict[str, Any]:
    """The store's cart keys as configured; with none, a fresh key for this run (kept in memory
    only) and verification enforced, as a store runs the product: the carts a run simulates
    sign, its workers verify (the demo, the chaos suite)."""
    auth = settings.cart_auth
    if auth.mode != "off" or auth.master_keys:
        return auth.model_dump()
    return {"mode": "enforce", "master_keys": {"run-1": secrets.token_urlsafe(32)}}


def cart_auth_env(settings: Settings) -> dict[str, str]:
    """`settings.cart_auth` as CARTSTREAM_CART_AUTH__* variables (none when off and keyless)."""
    auth = settings.cart_auth
    if auth.mode == "off" and not auth.master_keys and auth.cart_key is None:
        return {}
    env = {
        "CARTSTREAM_CART_AUTH__MODE": auth.mode,
        "CARTSTREAM_CART_AUTH__MASTER_KEYS": json.dumps(auth.master_key_text()),
        "CARTSTREAM_CART_AUTH__REVOKED_KEY_IDS": json.dumps(sorted(auth.revoked_key_ids)),
        "CARTSTREAM_CART_AUTH__MAX_AGE_S": str(auth.max_age_s),
        "CARTSTREAM_CART_AUTH__MAX_SKEW_S": str(auth.max_skew_s),
    }
    if auth.signing_key_id is not None:
        env["CARTSTREAM_CART_AUTH__SIGNING_KEY_ID"] = auth.signing_key_id
    if auth.cart_id is not None and auth.cart_key is not None:  # a cart's own key
        env["CARTSTREAM_CART_AUTH__CART_ID"] = auth.cart_id
        env["CARTSTREAM_CART_AUTH__CART_KEY"] = auth.cart_key.get_secret_value()
    return env


def consumed_topics(settings: Settings, roles: Sequence[str]) -> list[str]:
    """The topics a worker with these roles consumes (what a lag probe watches)."""
    topics = settings.topics
    inputs = {
        "detect": [topics.frames],
        "reason": [topics.weights, topics.sessions, topics.detections],
        "anomalies": [topics.basket_changes],
        "reconcile": [topics.basket_changes, topics.reviews],
        "persist": [topics.checkouts, topics.anomalies],
    }
    consumed = [t for r in roles for t in inputs[r]]
    consumed += [tick_topic_name(settings.app_id, r) for r in stateful_roles(roles)]
    return sorted(set(consumed))


def worker_env(
    settings: Settings, app_id: str, database_url: str, ready_file: Path
) -> dict[str, str]:
    """The child's environment: the parent's, with these settings as CARTSTREAM_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTSTREAM_")}
    web_port = free_port()
    env.update(
        {
            "CARTSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "CARTSTREAM_BROKER_PROFILE": settings.broker_profile,
            "CARTSTREAM_DATABASE_URL": database_url,
            "CARTSTREAM_APP_ID": app_id,
            "CARTSTREAM_WEB_PORT": str(web_port),
            # where the other workers route a live basket request to this one
            "CARTSTREAM_WEB_ADVERTISED_URL": f"http://127.0.0.1:{web_port}",
            "CARTSTREAM_READY_FILE": str(ready_file),
            # Faust's (empty) table folders beside the ready file, not in the caller's folder
            "CARTSTREAM_FAUST_DATADIR": str(ready_file.parent.absolute() / "faust"),
            "CARTSTREAM_OTEL_JSONL_PATH": str(settings.otel_jsonl_path.absolute()),
        }
    )
    env.update(kafka_security_env(settings))
    env.update(cart_auth_env(settings))
    # every stage shares the demo machine: one inference thread leaves a core for the rest
    env["CARTSTREAM_DETECT__THREADS"] = os.environ.get("CARTSTREAM_DETECT__THREADS", "1")
    for key, value in os.environ.items():  # keep the user's other settings (topics, SASL, ...)
        if key.startswith("CARTSTREAM_") and key not in env:
            env[key] = value
    return env
