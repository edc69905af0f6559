"""`cartstream broker` in the foreground stops its Tansu process on every stop signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from cartstream.services.kafka.broker import free_port, wait_for_port


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_to_the_command_stops_the_broker_too(signum: int) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "cartstream", "broker", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_port("127.0.0.1", port, 30), "the broker never listened"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert [c for c in children if "tansu" in c.name()], children
        os.kill(proc.pid, signum)  # to the command alone, as a process manager does
        assert proc.wait(timeout=20) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"left running: {alive}"
        time.sleep(0.2)
        assert not wait_for_port("127.0.0.1", port, 0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
