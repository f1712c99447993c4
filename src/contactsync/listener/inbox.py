"""The durable inbox with group commit: a request is committed before its 2xx, many per transaction.

One writer thread owns the write path. Request handlers hand it an :class:`InboxEntry` and wait on
a future; the writer drains everything queued since its last commit into one transaction (so N
concurrent requests cost one commit, not N), inserts the new rows and their handler runs, commits,
and only then resolves the futures. A transactionid already stored (or repeated inside the batch)
resolves as a duplicate; the unique key on ``transactionid`` is the final arbiter, also between
several listener processes sharing one PostgreSQL.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

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


_Item = tuple[InboxEntry, "Future[Stored]"]


class Inbox:
    """Group-committing writer of inbox rows (and one pending run per handler for each new row)."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        handler_names: Sequence[str],
        max_batch: int = DEFAULT_MAX_BATCH,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._handler_names = tuple(handler_names)
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.commits = 0
        """Transactions committed so far (the group-commit ratio is ``stored / commits``)."""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="contactsync-inbox", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Finish what is queued, then stop the writer."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def submit(self, entry: InboxEntry) -> Future[Stored]:
        """Queue ``entry``; the future resolves once its transaction is committed."""
        if self._closed or self._thread is None:
            raise ListenerError("the inbox is not running")
        future: Future[Stored] = Future()
        self._queue.put((entry, future))
        return future

    async def store(self, entry: InboxEntry) -> Stored:
        """Await the durable storage of ``entry`` from an event loop."""
        return await asyncio.wrap_future(self.submit(entry))

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Item]) -> None:
        try:
            results = self._commit_with_retry([entry for entry, _ in batch])
        except StorageError as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
        if self._on_commit is not None:
            self._on_commit(sum(1 for r in results if not r.duplicate))

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
        with self._engine.begin() as conn:
            existing = set(
                conn.execute(
                    sa.select(inbox.c.transactionid).where(inbox.c.transactionid.in_(list(first_of)))
                ).scalars()
            )
            fresh = [entries[p] for tid, p in first_of.items() if tid not in existing]
            ids: dict[str, int] = {}
            if fresh:
                conn.execute(sa.insert(inbox), [entry.row() for entry in fresh])
                ids = {
                    tid: rid
                    for rid, tid in conn.execute(
                        sa.select(inbox.c.id, inbox.c.transactionid).where(
                            inbox.c.transactionid.in_([e.transactionid for e in fresh])
                        )
                    )
                }
                if self._handler_names:
                    conn.execute(
                        sa.insert(handler_runs),
                        [
                            {
                                "inbox_id": ids[entry.transactionid],
                                "handler": name,
                                "state": STATE_PENDING,
                                "attempts": 0,
                                "next_attempt_at_ms": entry.received_at_ms,
                                "received_at_ms": entry.received_at_ms,
                            }
                            for entry in fresh
                            for name in self._handler_names
                        ],
                    )
        self.commits += 1
        return [
            Stored(ids[entry.transactionid], False)
            if first_of[entry.transactionid] == position and entry.transactionid in ids
            else Stored(None, True)
            for position, entry in enumerate(entries)
        ]
