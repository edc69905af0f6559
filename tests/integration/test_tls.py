"""The clients' TLS path end to end: the embedded broker behind a TLS terminator that
advertises the TLS port, a CA and certificate made for the test. The worker (Faust/aiokafka),
the cart client (kafka-python) and the retailer tail all connect with server verification and a
checkout goes through; a wrong CA fails at once with a clear error, not a hang."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cartstream.core.broker_check import check_tls
from cartstream.core.ids import now_ms
from cartstream.core.settings import KafkaSettings, Settings
from cartstream.exceptions import ConfigurationError
from cartstream.models.catalog import Catalog
from cartstream.schemas.records import SESSION_EVENT
from cartstream.services.carts.cart_client import CartClient
from cartstream.services.kafka.broker import EmbeddedBroker, free_port
from cartstream.services.kafka.tail import read_topic
from cartstream.services.kafka.topics import ensure_topics
from cartstream.services.tools.harness import WorkerProcess, run_worker_to_exit, worker_env
from cartstream.services.tools.tls import TlsFiles, TlsTerminator, make_certificates
from tests.integration.test_worker import run_sessions


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TlsFiles, Path]]:
    """(TLS bootstrap, the files, a CA that did not sign the broker's certificate)."""
    folder = tmp_path_factory.mktemp("tls")
    files = make_certificates(folder / "good")
    wrong_ca = make_certificates(folder / "other", ca_name="someone else's CA").ca
    tls_port = free_port()
    with (
        EmbeddedBroker(advertised_port=tls_port, log_path=folder / "broker.log") as broker,
        TlsTerminator(("127.0.0.1", broker.port), files, port=tls_port) as terminator,
    ):
        PLAINTEXT_PORT.append(broker.port)
        yield terminator.bootstrap, files, wrong_ca


PLAINTEXT_PORT: list[int] = []


@pytest.fixture
def plaintext_port(tls_broker: tuple[str, TlsFiles, Path]) -> int:
    """The embedded broker's own (plaintext) listener behind the terminator."""
    return PLAINTEXT_PORT[-1]


def tls_settings(bootstrap: str, cafile: Path, **overrides: object) -> Settings:
    kafka = KafkaSettings(bootstrap_servers=bootstrap, security_protocol="SSL", ssl_cafile=cafile)
    base = Settings(kafka=kafka, broker_profile="tansu", app_id=f"tls-{uuid.uuid4().hex[:8]}")
    return base.with_overrides(**overrides) if overrides else base


def test_worker_carts_and_tail_work_over_verified_tls(
    tls_broker: tuple[str, TlsFiles, Path], pg_url: str, tmp_path: Path, catalog: Catalog
) -> None:
    bootstrap, files, _ = tls_broker
    settings = tls_settings(bootstrap, files.ca, database_url=pg_url)
    check_tls(settings)
    ensure_topics(settings)
    ready = tmp_path / "ready"
    worker = WorkerProcess(worker_env(settings, settings.app_id, pg_url, ready), tmp_path / "w.log")
    try:
        worker.wait_ready(ready, timeout_s=90)
        _, requested, _ = run_sessions(settings, tmp_path, catalog, seed=4)
        assert requested
        tailed = [r for r, _ in read_topic(settings, settings.topics.checkouts, idle_timeout_s=2)]
        assert {r["session_id"] for r in tailed} >= set(requested)
    finally:
        worker.stop()


def session_event() -> dict[str, object]:
    return {
        "event_id": uuid.uuid4().hex,
        "cart_id": "cart-1",
        "store_id": "store-1",
        "session_id": "s-1",
        "kind": "STARTED",
        "time_ms": now_ms(),
    }


def test_a_wrong_ca_fails_at_once_with_a_clear_error(
    tls_broker: tuple[str, TlsFiles, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap, _, wrong_ca = tls_broker
    settings = tls_settings(bootstrap, wrong_ca)
    with pytest.raises(ConfigurationError, match="certificate does not verify"):
        check_tls(settings)
    with pytest.raises(ConfigurationError, match="certificate does not verify"):
        next(read_topic(settings, settings.topics.checkouts, idle_timeout_s=1))
    client = CartClient(settings, tmp_path / "spool")  # spools, and says why it cannot send
    with caplog.at_level(logging.WARNING, logger="cartstream.services.carts.cart_client"):
        client.send(settings.topics.sessions, "cart-1", SESSION_EVENT, session_event())
        deadline = time.monotonic() + 60
        while "certificate does not verify" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text[-2000:]
            time.sleep(0.2)
    assert client.pending() == 1  # kept in the spool
    client.close(timeout_s=0)
    env = worker_env(settings, settings.app_id, "sqlite://", tmp_path / "ready")
    started = time.monotonic()
    code, output = run_worker_to_exit(env)
    assert code != 0
    assert time.monotonic() - started < 30
    assert "certificate does not verify" in output


def test_tls_to_a_plaintext_listener_is_told_so(
    tls_broker: tuple[str, TlsFiles, Path], plaintext_port: int
) -> None:
    _, files, _ = tls_broker
    with pytest.raises(ConfigurationError, match="is it a TLS listener"):
        check_tls(tls_settings(f"127.0.0.1:{plaintext_port}", files.ca))
    check_tls(tls_settings(f"127.0.0.1:{free_port()}", files.ca))  # down: left to the retries
