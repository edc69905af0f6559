"""`cartstream db upgrade`: apply the Alembic migrations shipped in the package."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from cartstream.services.storage.repository import make_engine

# Only the role that migrates writes Alembic's version table: a writer role (`db roles`) gets
# INSERT on every new table through default privileges, this one included.
_VERSION_TABLE_READ_ONLY = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT DISTINCT grantee FROM information_schema.role_table_grants
           WHERE table_schema = current_schema() AND table_name = 'alembic_version'
             AND grantee <> current_user AND privilege_type <> 'SELECT'
  LOOP
    EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM %I',
                   r.grantee);
  END LOOP;
END $$;
"""


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option(
        "script_location", str(resources.files("cartstream.services.storage.migrations"))
    )
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    cfg = alembic_config()
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            if conn.dialect.name == "postgresql":
                conn.execute(text(_VERSION_TABLE_READ_ONLY))
    finally:
        engine.dispose()


def current(database_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
