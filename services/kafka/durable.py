"""Durable storage for the embedded broker: S3 served on loopback by moto, so Tansu keeps its
records, topics and committed offsets across a kill -9 and restart (restart tests only)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from cartstream.exceptions import BrokerError
from cartstream.services.kafka.broker import free_port, stop_process, wait_for_port

BUCKET = "tansu"


class LocalS3:
    """`moto_server` on 127.0.0.1 with the bucket Tansu writes to."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def broker_env(self) -> dict[str, str]:
        """What Tansu needs in its environment to use this S3."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "cartstream",
            "AWS_SECRET_ACCESS_KEY": "cartstream",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    @property
    def storage(self) -> str:
        return f"s3://{BUCKET}/"

    def start(self, timeout_s: float = 30.0) -> LocalS3:
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which(
            "moto_server"
        )
        if exe is None:
            raise BrokerError("moto_server not found: install the dev extra (moto[server])")
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=out, stderr=subprocess.STDOUT
        )
        if not wait_for_port("127.0.0.1", self.port, timeout_s):
            self.stop()
            raise BrokerError(f"moto_server did not listen on {self.endpoint}")
        deadline = time.monotonic() + timeout_s
        while True:  # the bucket, once the server answers
            try:
                request = urllib.request.Request(f"{self.endpoint}/{BUCKET}", method="PUT")
                urllib.request.urlopen(request, timeout=5).close()
                return self
            except (urllib.error.URLError, ConnectionError) as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError(f"cannot create bucket {BUCKET}: {exc}") from exc
                time.sleep(0.2)

    def stop(self) -> None:
        proc, self.process = self.process, None
        stop_process(proc, wait_s=10.0)

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
