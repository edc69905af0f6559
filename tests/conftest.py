"""Fixtures shared by every test layer.

Real services for integration and e2e tests: a Tansu broker process and a Postgres database.
Nothing is skipped quietly: if Postgres does not answer or the broker cannot start, the tests
error with the reason (CI must never pass without them).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings

from cartstream.core.settings import KafkaSettings, Settings
from cartstream.models.catalog import Catalog
from cartstream.services.kafka.broker import EmbeddedBroker

# property tests assert behaviour, not speed: how long an example takes depends on the machine's
# load (speeds are measured by `cartstream bench`), so no per-example deadline
hypothesis_settings.register_profile("cartstream", deadline=None)
hypothesis_settings.load_profile("cartstream")

PG_ADMIN_URL = os.environ.get("CARTSTREAM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

# Hermetic: the developer's own CARTSTREAM_* settings (a bootstrap, a database, a reasoning
# mode) never reach the tests, nor the workers and commands they start (those inherit this
# environment). A test that wants a setting passes it explicitly.
for _name in [k for k in os.environ if k.startswith("CARTSTREAM_") and k != "CARTSTREAM_TEST_PG"]:
    del os.environ[_name]

# spans of the test run (carts in this process, workers it starts) go to a scratch file, not
# into the checkout; a test that reads spans points its own settings at its own file
os.environ.setdefault(
    "CARTSTREAM_OTEL_JSONL_PATH",
    os.path.join(tempfile.gettempdir(), f"cartstream-test-spans-{os.getpid()}.jsonl"),
)


E2E = Path(__file__).parent / "e2e"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/e2e is marked `e2e`. Under `pytest -n N --dist loadgroup`
    (scripts/test) they run in two groups, each one test at a time in one process: the chaos
    suite, whose carts shop at a paced speed, and the rest; the unit and integration tests fill
    the gaps. Without xdist the group marks do nothing."""
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)
            group = "e2e-chaos" if item.get_closest_marker("chaos") else "e2e"
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture
def settings() -> Settings:
    """The defaults, whatever the environment says (see the scrub above)."""
    return Settings()


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh broker per test module (a group's session timeout is fixed per broker)."""
    with EmbeddedBroker() as b:
        yield b


def settings_on(broker: EmbeddedBroker) -> Callable[..., Settings]:
    """Settings for `broker`, each call with a fresh app id (its own consumer groups)."""

    def make(**overrides: object) -> Settings:
        base = Settings(
            kafka=KafkaSettings(bootstrap_servers=broker.bootstrap),
            broker_profile="tansu",
            app_id=f"it-{uuid.uuid4().hex[:8]}",
        )
        return base.with_overrides(**overrides) if overrides else base

    return make


@pytest.fixture(scope="module")
def broker_settings(broker: EmbeddedBroker) -> Callable[..., Settings]:
    return settings_on(broker)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A throwaway database on the real Postgres server, migrated to head."""
    from cartstream.services.storage.migrate import upgrade

    name = f"cartstream_it_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"Postgres at {PG_ADMIN_URL} does not answer ({exc}); run the README's setup command"
        ) from exc
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
