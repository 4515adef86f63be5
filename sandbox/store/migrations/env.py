"""Alembic environment: migrations run on the connection ``sandbox.store.db.migrate`` hands in."""

from __future__ import annotations

from alembic import context

from sandbox.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
