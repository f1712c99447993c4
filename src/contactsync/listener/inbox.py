"""The durable inbox with group commit: a request is committed before its 2xx, many per transaction.

Request handlers hand an :class:`InboxEntry` to :meth:`Inbox.store` and wait; everything queued
since the last commit goes into one transaction (so N concurrent requests cost one commit, not N):
the new rows and their handler runs are inserted, committed, and only then are the waiters resolved.
A transactionid already stored (or repeated inside the batch) resolves as a duplicate; the unique key
on ``transactionid`` is the final arbiter, also between listener processes sharing one PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa

from contactsync.db.backend import backend_of
from contactsync.db.errors import driver_errors, translated
from contactsync.db.listener import handler_runs, inbox
from contactsync.errors import (
    ConstraintError,
    DuplicateKeyError,
    ListenerError,
    StorageError,
    UnstorableValueError,
)

DEFAULT_MAX_BATCH = 256
"""Upper bound of requests per commit; bounds the transaction size, not throughput."""
STATE_PENDING = "pending"


class InboxEntry(NamedTuple):
    """One accepted request, exactly as received (headers as a JSON object text).

    A tuple (built once per request, cheaper than a frozen dataclass), in the inbox's column order.
    """

    transactionid: str
    received_at_ms: int
    method: str
    content_type: str
    query: str
    headers: str
    body: bytes
    source_address: str
    deduplicable: bool = True

    def row(self) -> dict[str, object]:
        return {
            "transactionid": self.transactionid,
            "received_at_ms": self.received_at_ms,
            "method": self.method,
            "content_type": self.content_type,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "source_address": self.source_address,
            "deduplicable": self.deduplicable,
        }


@dataclass(frozen=True, slots=True)
class Stored:
    """The writer's answer for one entry: its inbox id and whether it was already there."""

    inbox_id: int | None
    duplicate: bool


_Item = tuple[InboxEntry, "asyncio.Future[Stored]"]


class Inbox:
    """Group-committing writer of inbox rows (and one pending run per handler for each new row).

    Requests wait on the event loop; a single flusher task takes everything pending, commits it in a
    one-thread executor (one hand-off per batch, not per request), and resolves the waiters. While a
    commit is in flight the next batch accumulates, so the batch grows with the load. On SQLite and
    PostgreSQL the writer thread keeps one driver connection for its lifetime and sends plain SQL to
    it: per batch, a pool check-out, a liveness ping and the SQL expression layer cost more than the
    insert itself.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        handler_names: Sequence[str],
        max_batch: int = DEFAULT_MAX_BATCH,
        on_commit: Callable[[int], None] | None = None,
        write_lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self._engine = engine
        self._write_lock = write_lock or contextlib.nullcontext()
        self._handler_names = tuple(handler_names)
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._pending: list[_Item] = []
        self._flusher: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._backend = backend_of(engine)
        self._direct = self._backend.on_conflict
        self._held: Any = None
        """The writer thread's own driver connection (``_direct`` databases), opened on first use."""
        self._driver_errors = driver_errors(engine)
        self.commits = 0
        """Transactions committed so far (the group-commit ratio is ``stored / commits``)."""

    def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="contactsync-inbox")

    async def close(self) -> None:
        """Commit what is pending, then stop the writer thread and give back its connection."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._executor is not None:
            self._executor.submit(self._drop_held, invalidate=False)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def store(self, entry: InboxEntry) -> Stored:
        """Return once ``entry`` is committed (or known to be a duplicate)."""
        if self._executor is None:
            raise ListenerError("the inbox is not running")
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="contactsync-inbox-flush")
        return await future

    def busy(self) -> bool:
        """Whether requests are waiting for (or in) a commit right now."""
        return self._flusher is not None

    def write(self, entries: list[InboxEntry]) -> list[Stored]:
        """Commit ``entries`` in one transaction, from any thread (tools and tests)."""
        return self._commit_with_retry(entries, held=False)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    results = await loop.run_in_executor(
                        self._executor, self._commit_with_retry, [entry for entry, _ in batch]
                    )
                except StorageError as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                if self._on_commit is not None:
                    self._on_commit(sum(1 for r in results if not r.duplicate))
        finally:
            self._flusher = None

    def _commit_with_retry(self, entries: list[InboxEntry], held: bool = True) -> list[Stored]:
        # A concurrent writer in another process may insert one of our transactionids between our
        # look-up and our insert (databases without ON CONFLICT); the unique key then fails the batch and
        # a second pass sees it. A driver connection that broke is replaced once: nothing was committed.
        for attempt in range(3):
            try:
                if self._direct:
                    return self._commit_direct(entries, held=held)
                return self._commit(entries)
            except DuplicateKeyError as exc:
                if attempt == 2:
                    raise StorageError(f"inbox batch failed: {exc}") from exc
            except (ConstraintError, UnstorableValueError, sa.exc.SQLAlchemyError) as exc:
                raise StorageError(f"inbox batch failed: {exc}") from exc
            except _DriverFailure as exc:
                if attempt >= 1:
                    raise StorageError(f"inbox batch failed: {exc}") from exc
        raise StorageError("unreachable")  # pragma: no cover

    def _commit(self, entries: list[InboxEntry]) -> list[Stored]:
        first_of, fresh = _firsts(entries)
        with translated(), self._write_lock, self._engine.begin() as conn:
            ids = _insert_new(conn, fresh)
            if ids and self._handler_names:
                _insert_runs(conn, fresh, ids, self._handler_names)
        self.commits += 1
        return _answers(entries, first_of, ids)

    def _commit_direct(self, entries: list[InboxEntry], *, held: bool) -> list[Stored]:
        """The SQLite/PostgreSQL path: one ``INSERT … ON CONFLICT DO NOTHING RETURNING`` for the batch."""
        first_of, fresh = _firsts(entries)
        connection = self._held if held else None
        if connection is None:
            connection = self._engine.raw_connection()
            if held:
                self._held = connection
        backend = self._backend
        try:
            with self._write_lock:
                cursor = connection.cursor()
                try:
                    if backend.single_writer:  # autocommit connections: take the write lock now
                        cursor.execute("BEGIN IMMEDIATE")
                    runs_with_entries = backend.arrays and bool(self._handler_names)
                    if runs_with_entries:
                        cursor.execute(_PG_INSERT_WITH_RUNS, [*_arrays(fresh), list(self._handler_names)])
                    elif backend.arrays:
                        cursor.execute(_PG_INSERT, _arrays(fresh))
                    else:
                        cursor.execute(_insert_sql(len(fresh), backend.qmark), _params(fresh))
                    ids = {tid: rid for rid, tid in cursor.fetchall()}
                    if ids and self._handler_names and not runs_with_entries:
                        cursor.executemany(
                            _runs_sql(backend.qmark), _run_rows(fresh, ids, self._handler_names)
                        )
                    connection.commit()
                finally:
                    cursor.close()
        except self._driver_errors as exc:
            with contextlib.suppress(*self._driver_errors):
                connection.rollback()
            if held:  # it may be broken: the next attempt takes a fresh one
                self._drop_held(invalidate=True)
            else:
                connection.invalidate()
            raise _DriverFailure(str(exc)) from exc
        if not held:
            connection.close()
        self.commits += 1
        return _answers(entries, first_of, ids)

    def _drop_held(self, *, invalidate: bool) -> None:
        connection, self._held = self._held, None
        if connection is None:
            return
        if invalidate:
            connection.invalidate()
        else:
            connection.close()


class _DriverFailure(Exception):
    """A driver error on the direct path (the transaction was rolled back)."""


def _firsts(entries: list[InboxEntry]) -> tuple[dict[str, int], list[InboxEntry]]:
    """Position of each transactionid's first entry, and those first entries (repeats in a batch)."""
    first_of: dict[str, int] = {}
    for position, entry in enumerate(entries):
        first_of.setdefault(entry.transactionid, position)
    return first_of, [entries[p] for p in first_of.values()]


def _answers(entries: list[InboxEntry], first_of: dict[str, int], ids: dict[str, int]) -> list[Stored]:
    return [
        Stored(ids[entry.transactionid], False)
        if first_of[entry.transactionid] == position and entry.transactionid in ids
        else Stored(None, True)
        for position, entry in enumerate(entries)
    ]


_COLUMNS = (
    "transactionid",
    "received_at_ms",
    "method",
    "content_type",
    "query",
    "headers",
    "body",
    "source_address",
    "deduplicable",
)
_RUN_COLUMNS = ("inbox_id", "handler", "state", "attempts", "next_attempt_at_ms", "received_at_ms")


@functools.lru_cache(maxsize=2 * DEFAULT_MAX_BATCH)
def _insert_sql(rows: int, qmark: bool) -> str:
    """The multi-row insert of ``rows`` entries that skips stored transactionids and returns new ids."""
    row = "(" + ", ".join(["?" if qmark else "%s"] * len(_COLUMNS)) + ")"
    return (
        f"INSERT INTO {inbox.name} ({', '.join(_COLUMNS)}) VALUES {', '.join([row] * rows)}"
        " ON CONFLICT (transactionid) DO NOTHING RETURNING id, transactionid"
    )


_PG_TYPES = ("text", "bigint", "text", "text", "text", "text", "bytea", "text", "boolean")
_PG_INSERT_ROWS = (
    f"INSERT INTO {inbox.name} ({', '.join(_COLUMNS)})"
    f" SELECT * FROM unnest({', '.join(f'%b::{kind}[]' for kind in _PG_TYPES)})"
    " ON CONFLICT (transactionid) DO NOTHING"
)
_PG_INSERT = f"{_PG_INSERT_ROWS} RETURNING id, transactionid"
"""PostgreSQL: one array per column, so the statement's text is the same for every batch size (psycopg
parses a statement's placeholders once per distinct text, and prepares it; a many-row VALUES list was
parsed anew for every batch). Arrays go in binary (``%b``): psycopg escapes text arrays in Python, which
cost three times the binary form (client CPU per row: VALUES 51 µs, text arrays 76 µs, binary 25 µs)."""


_PG_INSERT_WITH_RUNS = (
    f"WITH fresh AS ({_PG_INSERT_ROWS} RETURNING id, transactionid, received_at_ms),"
    f" runs AS (INSERT INTO {handler_runs.name} ({', '.join(_RUN_COLUMNS)})"
    f" SELECT fresh.id, handler.name, '{STATE_PENDING}', 0, fresh.received_at_ms, fresh.received_at_ms"
    " FROM fresh CROSS JOIN unnest(%b::text[]) AS handler(name))"
    " SELECT id, transactionid FROM fresh"
)
"""PostgreSQL with handlers: the entries and one pending run per (new entry, handler) in one statement
(the runs were an executemany, one statement per row for the database to run)."""


def _arrays(fresh: list[InboxEntry]) -> list[list[object]]:
    """The batch as one list per column (entries are rows: transposed at C speed)."""
    return [list(column) for column in zip(*fresh, strict=True)]


@functools.cache
def _runs_sql(qmark: bool) -> str:
    marks = ", ".join(["?" if qmark else "%s"] * len(_RUN_COLUMNS))
    return f"INSERT INTO {handler_runs.name} ({', '.join(_RUN_COLUMNS)}) VALUES ({marks})"


if InboxEntry._fields != _COLUMNS:  # pragma: no cover - the entry is the row, field for field
    raise AssertionError("InboxEntry's fields must be the inbox columns, in order")


def _params(fresh: list[InboxEntry]) -> tuple[object, ...]:
    """The batch's parameters: each entry already is its row, so this is one C-level concatenation."""
    return tuple(itertools.chain.from_iterable(fresh))


def _run_rows(fresh: list[InboxEntry], ids: dict[str, int], names: Sequence[str]) -> list[tuple[object, ...]]:
    """One pending run per (new entry, handler), due at once."""
    return [
        (ids[e.transactionid], name, STATE_PENDING, 0, e.received_at_ms, e.received_at_ms)
        for e in fresh
        if e.transactionid in ids
        for name in names
    ]


def _insert_new(conn: sa.Connection, fresh: list[InboxEntry]) -> dict[str, int]:
    """Insert the entries whose transactionid is new; their inbox ids (databases without RETURNING).

    Look up, insert, look up: a concurrent insert in between fails the unique key and the batch is retried.
    """
    rows = [entry.row() for entry in fresh]
    tids = [entry.transactionid for entry in fresh]
    existing = set(
        conn.execute(sa.select(inbox.c.transactionid).where(inbox.c.transactionid.in_(tids))).scalars()
    )
    new_rows = [row for row in rows if row["transactionid"] not in existing]
    if not new_rows:
        return {}
    conn.execute(sa.insert(inbox), new_rows)
    query = sa.select(inbox.c.id, inbox.c.transactionid).where(
        inbox.c.transactionid.in_([row["transactionid"] for row in new_rows])
    )
    return {tid: rid for rid, tid in conn.execute(query)}


def _insert_runs(
    conn: sa.Connection, fresh: list[InboxEntry], ids: dict[str, int], names: Sequence[str]
) -> None:
    conn.exec_driver_sql(_runs_sql(backend_of(conn).qmark), _run_rows(fresh, ids, names))
