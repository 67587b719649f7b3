"""Alembic environment: runs on a connection handed over by db/migrate.py (no alembic.ini, no globals)."""

from __future__ import annotations

from alembic import context

from db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through db.migrate (strategy-engine db upgrade), not the alembic CLI")

context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
