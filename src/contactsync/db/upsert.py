"""``INSERT … ON CONFLICT`` on the platform's databases: the one place that picks the dialect's Insert.

PostgreSQL and SQLite spell the clause the same way and SQLAlchemy offers the same methods for both
(``on_conflict_do_nothing``, ``on_conflict_do_update(..., where=...)``); only the construct differs.
Rules the database must decide atomically (re-entry, one running run) are written with it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from contactsync.errors import ConfigError

ConflictInsert = postgresql.Insert | sqlite.Insert


def insert_on_conflict(dialect: str, table: sa.Table) -> ConflictInsert:
    """An INSERT into ``table`` that can say what to do when a unique key conflicts (``dialect``:
    ``conn.dialect.name``, so hot paths can build the statement once per dialect)."""
    name = dialect
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise ConfigError(f"the platform schema supports SQLite and PostgreSQL, not {name}")
