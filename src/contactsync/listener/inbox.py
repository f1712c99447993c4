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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from contactsync.db.listener import handler_runs, inbox
from contactsync.errors import ListenerError, StorageError

DEFAULT_MAX_BATCH = 256
"""Upper bound of requests per commit; bounds the transaction size, not throughput."""
STATE_PENDING = "pending"


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One accepted request, exactly as received (headers as a JSON object text)."""

    transactionid: str
    received_at_ms: int
    method: str
    content_type: str
    query: str
    headers: str
    body: bytes
    source_address: str

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
    commit is in flight the next batch accumulates, so the batch grows with the load.
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
        self.commits = 0
        """Transactions committed so far (the group-commit ratio is ``stored / commits``)."""

    def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="contactsync-inbox")

    async def close(self) -> None:
        """Commit what is pending, then stop the writer thread."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._executor is not None:
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
        return self._commit_with_retry(entries)

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

    def _commit_with_retry(self, entries: list[InboxEntry]) -> list[Stored]:
        # A concurrent writer in another process may insert one of our transactionids between our
        # look-up and our insert; the unique key then fails the batch and a second pass sees it.
        for attempt in range(3):
            try:
                return self._commit(entries)
            except sa.exc.IntegrityError as exc:
                if attempt == 2:
                    raise StorageError(f"inbox batch failed: {exc}") from exc
            except sa.exc.SQLAlchemyError as exc:
                raise StorageError(f"inbox batch failed: {exc}") from exc
        raise StorageError("unreachable")  # pragma: no cover

    def _commit(self, entries: list[InboxEntry]) -> list[Stored]:
        first_of: dict[str, int] = {}
        for position, entry in enumerate(entries):
            first_of.setdefault(entry.transactionid, position)
        fresh = [entries[p] for p in first_of.values()]
        with self._write_lock, self._engine.begin() as conn:
            ids = _insert_new(conn, fresh)
            if ids and self._handler_names:
                _insert_runs(conn, fresh, ids, self._handler_names)
        self.commits += 1
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
)
_RUN_COLUMNS = ("inbox_id", "handler", "state", "attempts", "next_attempt_at_ms", "received_at_ms")


def _placeholder(conn: sa.Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _insert_new(conn: sa.Connection, fresh: list[InboxEntry]) -> dict[str, int]:
    """Insert the entries whose transactionid is new; their inbox ids by transactionid.

    This is the hot path of every request, so SQLite and PostgreSQL get one plain multi-row
    ``INSERT … ON CONFLICT DO NOTHING RETURNING`` sent straight to the driver (building it through
    the SQL expression layer cost more than the insert itself). Elsewhere: look up, insert, look up.
    """
    if conn.dialect.name in ("sqlite", "postgresql"):
        mark = _placeholder(conn)
        row = "(" + ", ".join([mark] * len(_COLUMNS)) + ")"
        sql = (
            f"INSERT INTO {inbox.name} ({', '.join(_COLUMNS)}) VALUES {', '.join([row] * len(fresh))}"
            " ON CONFLICT (transactionid) DO NOTHING RETURNING id, transactionid"
        )
        params = tuple(
            value
            for e in fresh
            for value in (
                e.transactionid,
                e.received_at_ms,
                e.method,
                e.content_type,
                e.query,
                e.headers,
                e.body,
                e.source_address,
            )
        )
        return {tid: rid for rid, tid in conn.exec_driver_sql(sql, params)}
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
    """One pending run per (new entry, handler), due at once."""
    mark = _placeholder(conn)
    sql = f"INSERT INTO {handler_runs.name} ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join([mark] * 6)})"
    rows = [
        (ids[e.transactionid], name, STATE_PENDING, 0, e.received_at_ms, e.received_at_ms)
        for e in fresh
        if e.transactionid in ids
        for name in names
    ]
    conn.exec_driver_sql(sql, rows)
