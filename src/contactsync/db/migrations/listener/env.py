"""Alembic environment of the listener schema; driven by :func:`contactsync.db.migrate.upgrade`."""

from __future__ import annotations

from alembic import context

import contactsync.db.listener  # noqa: F401  (registers the tables on listener_metadata)
from contactsync.db.metadata import listener_metadata
from contactsync.db.migrate import version_table

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=listener_metadata,
    version_table=version_table("listener"),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
