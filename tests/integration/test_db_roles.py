"""Least privilege on the real Postgres: `cartstream db roles` makes an owner that migrates, a
writer that persist runs as (it saves checkouts, and cannot UPDATE, DELETE or DROP), and a
reader that can only read."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from cartstream.services.cli.main import cli
from cartstream.services.storage.migrate import upgrade
from cartstream.services.storage.repository import Repository, make_engine
from tests.conftest import PG_ADMIN_URL
from tests.integration.test_persistence import checkout

PASSWORDS = {"OWNER": "owner-pw-1", "WRITER": "writer-pw-2", "READER": "reader-pw-3"}


@pytest.fixture
def database() -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh database and three role names of its own (roles are server-wide)."""
    suffix = uuid.uuid4().hex[:8]
    name = f"cartstream_roles_{suffix}"
    roles = {part: f"cs_{part.lower()}_{suffix}" for part in PASSWORDS}
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, roles
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for role in roles.values():
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def url_as(role: str, password: str, database: str) -> str:
    return f"postgresql+psycopg://{role}:{password}@127.0.0.1:5432/{database}"


def test_the_writer_persists_and_can_do_nothing_else(
    database: tuple[str, dict[str, str]],
) -> None:
    name, roles = database
    env = {f"CARTSTREAM_DB_{part}_PASSWORD": pw for part, pw in PASSWORDS.items()}
    args = ["db", "roles", "--admin-url", PG_ADMIN_URL, "--database", name]
    args += ["--owner", roles["OWNER"], "--writer", roles["WRITER"], "--reader", roles["READER"]]
    result = CliRunner().invoke(cli, args, env=env, obj={})
    assert result.exit_code == 0, result.output
    assert all(pw not in result.output for pw in PASSWORDS.values())

    upgrade(url_as(roles["OWNER"], PASSWORDS["OWNER"], name))  # the migration Job's role
    writer = Repository(make_engine(url_as(roles["WRITER"], PASSWORDS["WRITER"], name)))
    try:
        assert writer.save_checkout(checkout("s-1"))
        assert not writer.save_checkout(checkout("s-1"))  # idempotent: no UPDATE needed
        assert [c.session_id for c in writer.checkouts(["s-1"])] == ["s-1"]
        for forbidden in (
            "UPDATE checkouts SET status = 'APPROVED'",
            "DELETE FROM checkout_items",
            "DROP TABLE anomalies",
            "TRUNCATE checkouts",
            "CREATE TABLE loot (x int)",
            "INSERT INTO alembic_version VALUES ('x')",
        ):
            with (
                pytest.raises(ProgrammingError, match="InsufficientPrivilege"),
                writer.engine.begin() as conn,
            ):
                conn.execute(text(forbidden))
    finally:
        writer.close()

    reader = make_engine(url_as(roles["READER"], PASSWORDS["READER"], name))
    try:
        with reader.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM checkouts")).scalar_one() == 1
        with pytest.raises(ProgrammingError, match="InsufficientPrivilege"), reader.begin() as conn:
            conn.execute(text("INSERT INTO anomalies (anomaly_id) VALUES ('x')"))
    finally:
        reader.dispose()

    # running it again (a new password, a new table from a later migration) keeps it right
    rerun = CliRunner().invoke(cli, args, env={**env, "CARTSTREAM_DB_WRITER_PASSWORD": "new"})
    assert rerun.exit_code == 0, rerun.output
    with make_engine(url_as(roles["OWNER"], PASSWORDS["OWNER"], name)).begin() as conn:
        conn.execute(text("CREATE TABLE later (x int)"))
    with make_engine(url_as(roles["WRITER"], "new", name)).begin() as conn:
        conn.execute(text("INSERT INTO later VALUES (1)"))
        with pytest.raises(ProgrammingError, match="InsufficientPrivilege"), conn.begin_nested():
            conn.execute(text("UPDATE later SET x = 2"))
