"""Refused requests, kept where a person can see them: reason, time, sender, action — never the body.

A refusal is counted in memory (a dict update on the request path, nothing else) under its minute,
reason, sender address and the action the platform's ``X-Contactsync-Action`` header names
(wire/sender.py); a
background task writes what changed once a second, one row per key and minute with a count. A
flood therefore costs at most one upsert per key a second, and a minute holds at most
:data:`MAX_KEYS_PER_MINUTE` keys: past that, refusals of the same reason are counted under one
"other senders" row. Retention prunes the rows by age (``retention_refusals_days``).

The action headers are not covered by the signature: they name where a request says it comes
from, for display only, and decide nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass

import sqlalchemy as sa

from contactsync.db.errors import translated
from contactsync.db.listener import refusals as table
from contactsync.errors import DuplicateKeyError

log = logging.getLogger("contactsync.listener.refusals")

MAX_KEYS_PER_MINUTE = 100
FLUSH_S = 1.0
OTHERS = "(other senders)"
MINUTE_MS = 60_000

REASON_TEXT = {
    "no_match": "no signature matches a secret this listener knows (add the action's secret under Secrets)",
    "missing_header": "the request carries no signature (webhook-id, -timestamp, -signature headers)",
    "bad_timestamp": "the webhook-timestamp header is not a Unix time",
    "too_old": "the signature's timestamp is too old (a replay, or the sender's clock is behind)",
    "too_new": "the signature's timestamp is in the future (the sender's clock is ahead)",
    "body_too_large": "the body is larger than this listener accepts",
    "unsupported_content_type": "the content type is neither a form nor JSON",
    "invalid_utf8": "the body is not UTF-8 text",
    "invalid_json": "the body is not valid JSON",
    "invalid_payload": "the body is not a contact sync (a required key is missing or wrong)",
    "max_input_vars": "the body has more variables than this listener accepts",
    "max_nesting": "the body is nested deeper than this listener accepts",
    "ip": "the sender's address is outside the allowed addresses",
    "method": "the method is neither POST nor GET",
    "storage": "the listener could not store it (database unavailable); the sender retries",
}
"""Each recorded reason in words (the admin page shows these, with the code beside)."""


def describe(reason: str) -> str:
    return REASON_TEXT.get(reason, reason.replace("_", " "))


@dataclass(slots=True)
class _Count:
    status: int
    action_name: str
    label: str
    count: int
    last_ms: int


Key = tuple[int, str, str, str]


class RefusalLog:
    """Counts refusals in memory and writes them aggregated (see the module docstring)."""

    def __init__(self, *, max_keys_per_minute: int = MAX_KEYS_PER_MINUTE) -> None:
        self._max = max_keys_per_minute
        self._pending: dict[Key, _Count] = {}
        self._seen: dict[int, set[tuple[str, str, str]]] = {}  # keys of each minute (current and last)
        self._lock = threading.Lock()
        self.writes = 0

    def record(
        self,
        reason: str,
        status: int,
        *,
        now_ms: int,
        source: str = "",
        action: str = "",
        action_name: str = "",
        label: str = "",
    ) -> None:
        minute = now_ms - now_ms % MINUTE_MS
        ident = (reason, source[:64], action)
        with self._lock:
            keys = self._seen.get(minute)
            if keys is None:
                keys = self._seen[minute] = set()
                for old in [m for m in self._seen if m < minute - MINUTE_MS]:
                    del self._seen[old]
            if ident not in keys:
                if len(keys) >= self._max:
                    ident = (reason, OTHERS, "")
                    action_name = label = ""
                keys.add(ident)
            key = (minute, *ident)
            c = self._pending.get(key)
            if c is None:
                self._pending[key] = _Count(status, action_name, label, 1, now_ms)
            else:
                c.count += 1
                c.last_ms = now_ms
                c.label = c.label or label

    def flush(self, engine: sa.Engine, *, lock: threading.Lock | None = None) -> int:
        """Write what was counted since the last flush; returns the rows written."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        with lock if lock is not None else contextlib.nullcontext(), engine.begin() as conn:
            for (minute, reason, source, action), c in pending.items():
                _upsert(conn, minute, reason, source, action, c)
        self.writes += len(pending)
        return len(pending)

    async def run(
        self, engine: sa.Engine, stop: asyncio.Event, *, lock: threading.Lock | None = None
    ) -> None:
        """Flush every :data:`FLUSH_S` until ``stop`` is set, and once more then."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_S)
            try:
                await asyncio.to_thread(self.flush, engine, lock=lock)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("refused requests not recorded: %s", exc)


def _upsert(conn: sa.Connection, minute: int, reason: str, source: str, action: str, c: _Count) -> None:
    """Add ``c`` to the key's row of that minute (another process may have written it too)."""
    t = table.c
    where = (t.minute_ms == minute, t.reason == reason, t.source_address == source, t.action == action)
    updated = conn.execute(
        table.update()
        .where(*where)
        .values(
            count=t.count + c.count,
            last_at_ms=sa.case((t.last_at_ms < c.last_ms, c.last_ms), else_=t.last_at_ms),
        )
    ).rowcount
    if updated:
        return
    try:
        with translated(), conn.begin_nested():
            conn.execute(
                table.insert().values(
                    minute_ms=minute,
                    reason=reason,
                    status=c.status,
                    source_address=source,
                    action=action,
                    action_name=c.action_name,
                    secret_label=c.label,
                    count=c.count,
                    last_at_ms=c.last_ms,
                )
            )
    except DuplicateKeyError:  # written by another process meanwhile
        conn.execute(table.update().where(*where).values(count=t.count + c.count))
