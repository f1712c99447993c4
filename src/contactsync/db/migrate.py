"""Run the Alembic migrations of one side (platform or listener) without an ``alembic.ini``.

Each side has its own script directory under ``db/migrations/<side>`` and its own version table
(``alembic_version_<side>``). The two schemas still need two databases: both have an
``admin_sessions`` table.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from contactsync.db.engine import create_engine
from contactsync.db.metadata import listener_metadata, platform_metadata
from contactsync.errors import ConfigError, StorageError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SIDES = {"platform": platform_metadata, "listener": listener_metadata}


def version_table(side: str) -> str:
    """Name of the Alembic version table of ``side``."""
    return f"alembic_version_{side}"


def alembic_config(side: str) -> Config:
    """An in-memory Alembic config pointing at the script directory of ``side``."""
    if side not in SIDES:
        raise ConfigError(f"unknown schema side {side!r} (expected one of {sorted(SIDES)})")
    script_dir = MIGRATIONS_DIR / side
    if not script_dir.is_dir():
        raise ConfigError(f"no migrations for side {side!r} at {script_dir}")
    cfg = Config()
    cfg.set_main_option("script_location", str(script_dir))
    cfg.attributes["side"] = side
    return cfg


def upgrade(engine_or_url: sa.Engine | str, *, side: str = "platform", revision: str = "head") -> None:
    """Bring the schema of ``side`` up to ``revision`` (default: the latest)."""
    cfg = alembic_config(side)
    engine = create_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                _sqlite_foreign_keys(conn, on=False)
            try:
                with conn.begin():
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, revision)
                    if sqlite:
                        _check_foreign_keys(conn, side)
            finally:
                if sqlite:
                    _sqlite_foreign_keys(conn, on=True)
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(f"migrating the {side} schema failed: {exc}") from exc
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()


def pending(engine: sa.Engine, *, side: str = "platform") -> str | None:
    """Why the schema of ``side`` in ``engine`` is not the one this code needs (``None``: it is).

    Commands that expect a migrated database ask first, so a missing schema is one plain sentence
    instead of the first query's ``no such table``; StorageError when the database cannot be opened.
    """
    heads = set(ScriptDirectory.from_config(alembic_config(side)).get_heads())
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": version_table(side)})
            current = set(context.get_current_heads())
    except sa.exc.SQLAlchemyError as exc:
        reason = str(exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc).strip().splitlines()
        raise StorageError(f"cannot open the {side} database: {reason[0] if reason else exc}") from exc
    if not current:
        return f"has no {side} schema yet"
    if current != heads:
        return f"is at revision {', '.join(sorted(current))}; this version needs {', '.join(sorted(heads))}"
    return None


def _sqlite_foreign_keys(conn: sa.Connection, *, on: bool) -> None:
    """Switch SQLite's foreign keys outside any transaction (the pragma is a no-op inside one).

    A migration rebuilding a table drops the old one; with foreign keys on, that drop would first
    delete its rows and cascade into every table referencing it (SQLite's documented procedure for
    schema changes turns them off, and checks them before committing).
    """
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def _check_foreign_keys(conn: sa.Connection, side: str) -> None:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise StorageError(f"migrating the {side} schema left {len(broken)} broken references: {broken[:5]}")
