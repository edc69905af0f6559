"""A broker that requires a login (Tansu started with `--authentication`) refuses an
unauthenticated worker, and the worker says so at once and exits, instead of retrying for ever."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cartstream.core.broker_check import check_access
from cartstream.core.settings import KafkaSettings, Settings
from cartstream.exceptions import ConfigurationError
from cartstream.services.kafka.broker import EmbeddedBroker, free_port
from cartstream.services.tools.harness import run_worker_to_exit, worker_env


def test_an_unauthenticated_worker_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    with EmbeddedBroker(authentication=True, log_path=tmp_path / "broker.log") as broker:
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=broker.bootstrap), broker_profile="tansu"
        )
        with pytest.raises(ConfigurationError, match="not this unauthenticated client"):
            check_access(settings, timeout_s=5)
        env = worker_env(settings, "login-test", "sqlite://", tmp_path / "ready")
        started = time.monotonic()
        code, output = run_worker_to_exit(env)
        assert code != 0
        assert "it may require a login" in output
        assert time.monotonic() - started < 60
    nobody = Settings(kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    check_access(nobody, timeout_s=2)  # down, not misconfigured: left to the clients' retries
