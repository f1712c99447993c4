"""What the database under a connection can do: the one place outside migrations that asks which it is.

The same code runs on SQLite (embedded, one writer), PostgreSQL (a server many processes share) and,
for the listener, MySQL/MariaDB. Callers ask :func:`backend_of` a question by what it means — may rows
be locked one by one, can an enqueue wake the dispatchers, does a list bind as one array parameter —
and use the few builders here whose SQL differs (``INSERT … ON CONFLICT``, ``FOR UPDATE SKIP LOCKED``,
text functions), instead of comparing database names, as procrastinate keeps every difference behind
its connector. A statement built once per database is cached by its :class:`Backend` (hashable).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from contactsync.db.engine import normalize_url
from contactsync.errors import ConfigError

ConflictInsert = postgresql.Insert | sqlite.Insert
Bind = sa.Connection | sa.Engine | sa.Dialect
S = TypeVar("S", bound=sa.Select[Any])

IDS = "ids"
"""Name of the parameter :meth:`Backend.in_ids` reads its ids from."""


@dataclass(frozen=True, slots=True)
class Backend:
    """The capabilities of one database and driver; equal for every connection to the same kind."""

    name: str
    """SQLAlchemy's name for it, for messages; ask a capability below rather than compare it."""
    embedded: bool
    """The database runs inside this process (SQLite): its work is our CPU, a statement costs no
    round trip, and a second connection gains no parallelism."""
    single_writer: bool
    """One write transaction at a time holds the whole database (SQLite): writers in this process
    take turns on a lock instead of backing off in the busy handler, and one dispatcher is supported."""
    row_locks: bool
    """``SELECT … FOR UPDATE [SKIP LOCKED]`` locks the rows it reads (PostgreSQL, MySQL); without
    them the write transaction already excludes every other writer."""
    listen_notify: bool
    """A commit can wake waiting processes (PostgreSQL ``LISTEN``/``NOTIFY``)."""
    arrays: bool
    """A list binds as one array parameter (PostgreSQL ``= ANY(:ids)``, ``unnest``): statements keep one
    text however many values, and take thousands of them."""
    row_value_ranges: bool
    """The planner reads a row-value bound ``(a, b) < (x, y)`` as one index range (PostgreSQL); SQLite
    reads it as a range of the first column only, so there an equality on that column serves."""
    on_conflict: bool
    """``INSERT … ON CONFLICT … RETURNING`` (PostgreSQL, SQLite): a duplicate is skipped atomically."""
    native_types: bool
    """The driver takes and returns datetimes and JSON as Python values (psycopg); SQLite stores them
    as text that SQLAlchemy's types convert, so SQL sent to the driver directly passes text."""
    qmark: bool
    """The driver's placeholders are ``?`` (sqlite3); otherwise ``%s``."""
    multi_rowcount: bool
    """An executemany reports the rows it matched in total (``rowcount``)."""
    update_returning: bool
    """``UPDATE … RETURNING`` (PostgreSQL, SQLite): a claim leases and reads its rows in one statement."""

    @property
    def ids_per_statement(self) -> int:
        """How many ids one :meth:`in_ids` statement takes: SQLite's parameter limit bounds an ``IN``."""
        return 5000 if self.arrays else 500

    def insert_on_conflict(self, table: sa.Table) -> ConflictInsert:
        """An INSERT into ``table`` that can say what to do when a unique key conflicts
        (``on_conflict_do_nothing``, ``on_conflict_do_update(..., where=...)``: the same on both)."""
        if self.name == "postgresql":
            return postgresql.insert(table)
        if self.name == "sqlite":
            return sqlite.insert(table)
        raise ConfigError(f"the platform schema supports SQLite and PostgreSQL, not {self.name}")

    def insert_ignoring(self, table: sa.Table, *, keys: list[str] | None = None) -> ConflictInsert:
        """An INSERT into ``table`` that skips rows whose unique key (``keys``: which one) is taken."""
        return self.insert_on_conflict(table).on_conflict_do_nothing(index_elements=keys)

    @contextlib.contextmanager
    def planned_on_indexes(self, conn: sa.Connection) -> Iterator[None]:
        """Statements run in the block reach their rows through indexes (and in an index's order where
        they sort), whatever the planner estimates.

        For statements that always touch a handful of rows by key, where a scan is never right but
        the estimates can say otherwise: a queue's pick (``ORDER BY due LIMIT n`` behind anti-joins)
        that PostgreSQL believed, with one account, would find one row, so it sorted the whole
        backlog for each batch (measured: 33 ms to take 200 of 8,000); reads by a batch's keys on a
        table that grew since the statistics were taken. PostgreSQL: sequential and bitmap scans and
        sorts are off for the block, and as they were after it. Elsewhere nothing changes (SQLite
        uses the index the query names). A statement meant for the block runs only inside it: a
        generic plan PostgreSQL cached for the same text outside would be reused as it is."""
        if self.name != "postgresql":
            yield
            return
        before = tuple(conn.exec_driver_sql(_PLAN_BY_INDEX).one())[0::2]
        yield  # an error aborts the transaction, and its rollback restores them
        conn.exec_driver_sql(_RESTORE_PLANNER, before)

    def locked(self, query: S) -> S:
        """``query`` locking the rows it reads until the transaction ends, where rows lock."""
        return query.with_for_update() if self.row_locks else query

    def skip_locked(self, query: S, *, of: sa.Table | None = None) -> S:
        """``query`` taking only rows no other transaction holds, and locking them: claims side by side.
        Without row locks the write transaction already excludes the others: ``query`` as it is."""
        return query.with_for_update(skip_locked=True, of=of) if self.row_locks else query

    def in_ids(self, column: sa.ColumnElement[int], name: str = IDS) -> sa.ColumnElement[bool]:
        """``column`` among the ids of parameter ``name``: ``= ANY(:ids)`` with arrays, one parameter
        however many ids (an expanding ``IN`` makes SQLAlchemy and psycopg render and parse a parameter
        per id: measured, 5 s of a 5M-contact manual run's 15 s of CPU); elsewhere ``IN``."""
        return self.among(column, name, sa.BigInteger())

    def among(
        self, column: sa.ColumnElement[Any], name: str, item: sa.types.TypeEngine[Any]
    ) -> sa.ColumnElement[bool]:
        """``column`` among the values (of type ``item``) of list parameter ``name``; see :meth:`in_ids`."""
        if self.arrays:
            return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(item)))
        return column.in_(sa.bindparam(name, expanding=True))

    # -- text, compared as Python compares str ---------------------------------------------------

    def in_code_points(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        """``column`` compared and sorted by code point: SQLite's BINARY collation does; a PostgreSQL
        database's (en_US, ICU) may not, so there ``COLLATE "C"``."""
        return column.collate("C") if self.name == "postgresql" else column

    def position(self, column: sa.ColumnElement[str], text: str) -> sa.ColumnElement[int]:
        """1-based position of ``text`` in ``column``, 0 if absent, case-sensitive (SQLite's ``LIKE``
        ignores case, so substring tests use this)."""
        return sa.func.instr(column, text) if self.name == "sqlite" else sa.func.strpos(column, text)

    def last_chars(self, column: sa.ColumnElement[str], n: int) -> sa.ColumnElement[str]:
        """The last ``n`` characters of ``column`` (``n`` > 0)."""
        return sa.func.substr(column, -n) if self.name == "sqlite" else sa.func.right(column, n)

    def glob(self, column: sa.ColumnElement[str], pattern: str) -> sa.ColumnElement[bool]:
        """``column`` matches the wildcard ``pattern`` (``*`` any run, ``?`` one character, anything
        else literal), case-sensitive: ``GLOB`` on SQLite, ``LIKE`` with an escape elsewhere."""
        if self.name == "sqlite":  # only '[' opens a class in GLOB; wrapping it in a class makes it literal
            return column.op("GLOB")(pattern.replace("[", "[[]"))
        return column.like(_like_pattern(pattern), escape="\\")


_PLANNER_SWITCHES = ("enable_seqscan", "enable_bitmapscan", "enable_sort")
_PLAN_BY_INDEX = "SELECT " + ", ".join(
    f"current_setting('{name}'), set_config('{name}', 'off', true)" for name in _PLANNER_SWITCHES
)
_RESTORE_PLANNER = "SELECT " + ", ".join(f"set_config('{name}', %s, true)" for name in _PLANNER_SWITCHES)


def _like_pattern(glob: str) -> str:
    out = []
    for ch in glob:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


@functools.cache
def _backend(name: str, qmark: bool, multi_rowcount: bool, update_returning: bool) -> Backend:
    embedded = name == "sqlite"
    return Backend(
        name=name,
        embedded=embedded,
        single_writer=embedded,
        row_locks=not embedded,
        listen_notify=name == "postgresql",
        arrays=name == "postgresql",
        row_value_ranges=name == "postgresql",
        on_conflict=name in ("postgresql", "sqlite"),
        native_types=name == "postgresql",
        qmark=qmark,
        multi_rowcount=multi_rowcount,
        update_returning=update_returning,
    )


def backend_of(bind: Bind) -> Backend:
    """The :class:`Backend` a connection, engine or SQLAlchemy dialect talks to."""
    found = bind if isinstance(bind, sa.Dialect) else bind.dialect
    return _backend(
        found.name,
        found.paramstyle == "qmark",
        bool(found.supports_sane_multi_rowcount),
        bool(found.update_returning),
    )


def backend_of_url(url: str) -> Backend:
    """The :class:`Backend` a database URL names, before any engine exists (the driver is not loaded)."""
    try:
        kind = sa.engine.make_url(normalize_url(url)).get_dialect()
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigError(f"cannot use database URL {url!r}: {exc}") from exc
    return backend_of(kind())  # without a driver module: the dialect's defaults
