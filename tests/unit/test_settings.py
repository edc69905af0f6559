from __future__ import annotations

import pytest

from cartstream.core.settings import BrokerTuning, Settings, load_settings
from cartstream.exceptions import ConfigurationError


def test_environment_sets_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTSTREAM_KAFKA__BOOTSTRAP_SERVERS", "b1:9093, b2:9093")
    monkeypatch.setenv("CARTSTREAM_TOPICS__STREAM_PARTITIONS", "32")
    monkeypatch.setenv("CARTSTREAM_DATABASE_URL", "postgresql+psycopg://u:secret@db/x")
    s = load_settings()
    assert s.kafka.bootstrap_list == ["b1:9093", "b2:9093"]
    assert s.topics.all_topics()["cart.frames"] == 32
    assert "secret" not in repr(s)  # secrets never print
    assert s.database_url.get_secret_value().endswith("@db/x")


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(Exception):
        s.app_id = "other"  # type: ignore[misc]


def test_sasl_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTSTREAM_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ConfigurationError, match="sasl_mechanism"):
        load_settings()
    monkeypatch.setenv("CARTSTREAM_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CARTSTREAM_KAFKA__SASL_USERNAME", "cart")
    monkeypatch.setenv("CARTSTREAM_KAFKA__SASL_PASSWORD", "pw")
    cfg = load_settings().kafka.kafka_python_config()
    assert cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert cfg["sasl_plain_password"] == "pw"
    assert cfg["security_protocol"] == "SASL_SSL"


def test_broker_workarounds_only_in_the_tansu_profile() -> None:
    kafka, tansu = BrokerTuning.for_profile("kafka"), BrokerTuning.for_profile("tansu")
    assert kafka.producer_max_batch_bytes > 1
    assert tansu.producer_max_batch_bytes == 1
    assert tansu.session_timeout_s < kafka.session_timeout_s
    assert kafka.fetch_max_wait_ms is None and tansu.fetch_max_wait_ms == 20
    assert Settings().tuning == kafka
    assert Settings(broker_profile="tansu").tuning == tansu
    on_s3 = BrokerTuning.for_profile("tansu-s3")  # each fetch lists objects: give it time
    same_as_tansu: dict[str, object] = {
        "fetch_max_wait_ms": 20,
        "fetch_min_bytes": 16384,
        "producer_idempotence": True,
    }
    assert on_s3.model_copy(update=same_as_tansu) == tansu
    # fewer, fuller fetches where the wait is short; never a 1.5 s wait for 16 KB
    assert kafka.fetch_min_bytes == on_s3.fetch_min_bytes == 1 and tansu.fetch_min_bytes > 1
    assert not on_s3.producer_idempotence  # a retry refused as a duplicate was lost
    assert on_s3.fetch_max_wait_ms is not None and on_s3.fetch_max_wait_ms >= 1000
    # tools that read to the end never wait less than 500 ms (a short wait starves long logs)
    assert kafka.reader_fetch_wait_ms == tansu.reader_fetch_wait_ms == 500
    assert on_s3.reader_fetch_wait_ms == on_s3.fetch_max_wait_ms
    longer = Settings(broker_profile="tansu", fetch_max_wait_ms=250).tuning  # a long run's
    assert longer == tansu.model_copy(update={"fetch_max_wait_ms": 250})


def test_overrides_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        Settings().with_overrides(otel_exporter="otlp")  # needs an endpoint


def test_the_suite_never_sees_the_developers_own_settings(settings: Settings) -> None:
    import os

    own = {"CARTSTREAM_TEST_PG", "CARTSTREAM_OTEL_JSONL_PATH"}  # the suite's own (conftest)
    leaked = [k for k in os.environ if k.startswith("CARTSTREAM_") and k not in own]
    assert leaked == []
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092" and settings.app_id == "cartstream"


def test_configuration_mistakes_raise_configuration_error(catalog: object) -> None:
    from cartstream.models.torch_device import pick_device

    if not __import__("torch").cuda.is_available():
        with pytest.raises(ConfigurationError, match=r"reason\.device=cuda"):
            pick_device("cuda", "reason.device")
    with pytest.raises(ConfigurationError, match="reason"):
        Settings().with_overrides(reason={"device": "tpu"})
