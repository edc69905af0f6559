"""A chaos run gets a database of its own and drops it afterwards (none pile up on the server)."""

from __future__ import annotations

import psycopg
from sqlalchemy.engine import make_url

from cartstream.services.tools.chaos.run import drop_database, fresh_database

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _exists(name: str) -> bool:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def test_a_run_database_is_migrated_then_dropped_even_while_connected() -> None:
    url = fresh_database(ADMIN_URL, "chaos_test")
    name = make_url(url).database
    assert name is not None and _exists(name)
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as held:  # a worker that did not let go yet
        assert held.execute("SELECT count(*) FROM checkouts").fetchone() == (0,)
        drop_database(ADMIN_URL, url)
    assert not _exists(name)
