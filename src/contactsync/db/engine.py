"""Engine factory: SQLite by default (WAL, foreign keys, busy timeout), PostgreSQL or MariaDB by URL.

PostgreSQL connections run with JIT off: every statement here reads an index's worth of rows, but
the planner's cost estimates for correlated sub-queries over large tables cross JIT's threshold and
each execution then spends milliseconds compiling (measured: 7 ms of a manual-run chunk's 36 ms).

Prepared statements keep PostgreSQL's generic plans (psycopg prepares a statement on its sixth
run; PostgreSQL may then plan it once for all values). A generic plan made while a new database's
tables were small goes on scanning them as they grow: the projection's reads by a batch's contact
ids did (measured: 72 ms per batch, 1.7 ms of database CPU per request, and a backlog that grew at
70 % of the peak). Statements that always reach a few rows by key run under
``Backend.planned_on_indexes`` instead of replanning every run: planning each foreign-key check
against the 20 indexes of ``deliveries`` cost 100 µs instead of 20.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from contactsync.errors import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 30_000

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}


def normalize_url(url: str) -> str:
    """Pick the driver we ship for a plain ``postgresql://`` or ``mysql://`` URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"database URL {url!r} has no scheme (expected sqlite:///path or postgresql://…)")
    return f"{_DRIVERS.get(scheme, scheme)}://{rest}"


def embedded_file(url: str) -> str | None:
    """The file a SQLite URL names (``""`` or ``":memory:"``: in memory); ``None`` for a server's URL."""
    parsed = sa.engine.make_url(url)
    return (parsed.database or "") if parsed.get_backend_name() == "sqlite" else None


def libpq_url(engine: Engine) -> str:
    """The engine's PostgreSQL URL as libpq (psycopg's own connections) spells it, password included."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # isolation_level=None lets SQLAlchemy's "begin" event issue BEGIN IMMEDIATE itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_full_sync(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous=FULL")


def _postgresql_session(dbapi_connection: Any, _record: Any) -> None:
    # a SET, not connect options, so options the URL carries (a search_path, ...) still apply
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET jit = off")
    dbapi_connection.commit()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Take the write lock up front: a deferred transaction that later writes can fail with
    # SQLITE_BUSY without waiting, which would surface as a spurious error under concurrency.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(
    url: str, *, echo: bool = False, pool_size: int = 10, sync_every_commit: bool = False
) -> Engine:
    """Create an engine with the settings every contactsync database needs.

    ``sync_every_commit``: every commit is fsynced before it returns, not just checkpoints (SQLite
    ``synchronous=FULL``; PostgreSQL and MySQL do so by default).
    """
    url = normalize_url(url)
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            sa.event.listen(engine, "begin", _sqlite_begin)
            if sync_every_commit:
                sa.event.listen(engine, "connect", _sqlite_full_sync)
            return engine
        engine = sa.create_engine(
            url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )
        if url.startswith("postgresql"):
            sa.event.listen(engine, "connect", _postgresql_session)
        return engine
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigError(f"cannot use database URL {url!r}: {exc}") from exc


@contextlib.contextmanager
def write_transaction(
    engine: Engine, lock: AbstractContextManager[Any] | None = None
) -> Iterator[sa.Connection]:
    """A transaction under ``lock`` whose connection is discarded, not pooled, if the driver failed.

    A session that was killed, or left read-only by a failover, would fail every later transaction too.
    """
    with lock or contextlib.nullcontext(), engine.connect() as conn:
        try:
            with conn.begin():
                yield conn
        except sa.exc.DBAPIError:
            conn.invalidate()
            raise
