"""`cartstream db roles`: least-privilege Postgres roles for one cartstream database.

- the *owner* owns the schema's tables and runs the migrations (`cartstream db upgrade` as it;
  the chart's migration Job only);
- the *writer* is what workers log in as: SELECT and INSERT on cartstream's tables, nothing else
  (persist writes with INSERT ... ON CONFLICT DO NOTHING, so it never needs UPDATE or DELETE);
- the *reader* is for retailer reporting: SELECT only.

Run once by an administrator (a role that may create roles), again after adding a role or
changing a password: it is idempotent. Tables a later migration creates get the same grants
(default privileges of the owner). Passwords come from the environment, never the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from cartstream.exceptions import ConfigurationError


@dataclass(frozen=True)
class Roles:
    owner: str = "cartstream_owner"
    writer: str = "cartstream_writer"
    reader: str = "cartstream_reader"

    def names(self) -> tuple[str, str, str]:
        return self.owner, self.writer, self.reader


def create_roles(admin_url: str, database: str, roles: Roles, passwords: dict[str, str]) -> None:
    """Create (or update) the three roles and their grants on `database`'s public schema.
    `admin_url`: a libpq URL of a role allowed to create roles, for any database on the server.
    `passwords`: role name -> password (a role without one cannot log in)."""
    if len(set(roles.names())) != 3:
        raise ConfigurationError("the owner, writer and reader must be three different roles")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in roles.names():
            _ensure_role(conn, name, passwords.get(name))
        db = sql.Identifier(database)
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        conn.execute(
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                db, sql.Identifier(roles.owner)
            )
        )
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}").format(
                db, sql.Identifier(roles.writer), sql.Identifier(roles.reader)
            )
        )
    with psycopg.connect(_on_database(admin_url, database), autocommit=True) as conn:
        owner, writer, reader = (sql.Identifier(n) for n in roles.names())
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(owner))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}, {}").format(writer, reader))
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        for table in tables:  # tables migrated before the owner existed change hands
            conn.execute(
                sql.SQL("ALTER TABLE public.{} OWNER TO {}").format(sql.Identifier(table), owner)
            )
        conn.execute(
            sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}, {}").format(writer, reader)
        )
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {}").format(writer)
        )
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(reader))
        if "alembic_version" in tables:  # the migrations' bookkeeping: the owner's alone
            conn.execute(sql.SQL("REVOKE INSERT ON public.alembic_version FROM {}").format(writer))
        for grant in (
            "GRANT SELECT, INSERT ON TABLES TO {writer}",
            "GRANT SELECT ON TABLES TO {reader}",
            "GRANT USAGE ON SEQUENCES TO {writer}",
        ):
            conn.execute(
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public " + grant
                ).format(owner=owner, writer=writer, reader=reader)
            )


def _ensure_role(conn: psycopg.Connection, name: str, password: str | None) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    verb = "ALTER" if exists else "CREATE"
    login = (
        sql.SQL("LOGIN PASSWORD {}").format(sql.Literal(password))
        if password
        else sql.SQL("NOLOGIN")
    )
    conn.execute(
        sql.SQL(verb + " ROLE {} {} NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
            sql.Identifier(name), login
        )
    )


def _on_database(url: str, database: str) -> str:
    """`url` pointed at another database on the same server."""
    return psycopg.conninfo.make_conninfo(url, dbname=database)
