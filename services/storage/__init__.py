"""Postgres (or SQLite for the demo): tables, the idempotent repository, Alembic migrations."""
