"""Retention: history older than its horizon is deleted in small batches, so tables stay bounded.

Each kind of history has its own horizon in days (0 keeps it forever). Deletion goes in batches of a
few hundred rows, each in its own short transaction, so no lock is held for long and the dispatcher
and listener keep working beside it. Work that may still matter is never touched: pending, in-flight
and (until their own, longer horizon) failed deliveries; running manual runs; inbox entries whose
handlers have not all finished.

Append-only tables are walked oldest id first and the walk stops at the first row young enough to
keep, so a pass costs what it deletes (plus the few rows kept at the head), not the table's size;
deliveries, whose age to delete depends on their state, are picked through ``(state, updated_at)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from contactsync.db import listener as ldb
from contactsync.db import platform as pdb

log = logging.getLogger("contactsync.retention")

BATCH_ROWS = 500
FIRST_PASS_AFTER_S = 60.0
"""A process prunes first this long after it starts (not while it warms up), then every interval."""
PAUSE_BETWEEN_BATCHES_S = 0.01
"""A breath between batches lets the single SQLite writer serve the dispatcher or listener."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """Days each kind of history is kept (0: forever); ``contactsync db prune`` and the UI show them."""

    delivered_days: float = 30.0
    """Delivered and cancelled deliveries, with their attempts, counted from when they finished."""
    failed_days: float = 90.0
    """Failed deliveries, with their attempts (a replay makes them pending again and resets this)."""
    endpoint_events_days: float = 90.0
    entries_days: float = 365.0
    """Automation entries (history only: re-entry is decided by the gates, which are kept)."""
    runs_days: float = 90.0
    """Finished manual runs."""
    audit_days: float = 365.0
    activities_days: float = 0.0
    """Marketing activity is what rules look back over ("opened within 30 days"): kept by default."""
    inbox_days: float = 14.0
    """Listener inbox entries whose handlers all finished, with their runs and attempts."""
    refusals_days: float = 7.0
    """The listener's counts of refused requests (its admin page's "Refused")."""

    @classmethod
    def from_settings(cls, settings: Any) -> Retention:
        return cls(**{name: getattr(settings, f"retention_{name}") for name in cls.__dataclass_fields__})


@dataclass(slots=True)
class Report:
    """Rows deleted (or that would be) per kind."""

    rows: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return ", ".join(f"{kind} {n}" for kind, n in self.rows.items() if n) or "nothing"

    def add(self, kind: str, n: int) -> None:
        self.rows[kind] = self.rows.get(kind, 0) + n

    @property
    def total(self) -> int:
        return sum(self.rows.values())


# --- picking ---------------------------------------------------------------------------------------


def _walk(
    conn: sa.Connection,
    table: sa.Table,
    stamp: sa.ColumnElement[Any],
    cutoff: Any,
    *,
    keep: sa.ColumnElement[bool] | None = None,
    after: int = 0,
    limit: int,
) -> tuple[list[int], int, bool]:
    """Oldest-first ids older than ``cutoff`` (skipping rows ``keep`` protects): ``(ids, last id
    read, reached a young row)``."""
    columns = [table.c.id, stamp.label("stamp")]
    if keep is not None:
        columns.append(keep.label("keep"))
    rows = conn.execute(sa.select(*columns).where(table.c.id > after).order_by(table.c.id).limit(limit)).all()
    ids: list[int] = []
    for row in rows:
        if row.stamp is not None and row.stamp >= cutoff:
            return ids, row.id, True
        if keep is None or not row.keep:
            ids.append(int(row.id))
    return ids, (int(rows[-1].id) if rows else after), len(rows) < limit


def _delete(conn: sa.Connection, table: sa.Table, ids: Sequence[int]) -> int:
    return int(conn.execute(table.delete().where(table.c.id.in_(ids))).rowcount) if ids else 0


@dataclass(frozen=True, slots=True)
class _Appended:
    """An append-only table: deleted oldest first, up to the first row younger than its horizon."""

    table: sa.Table
    stamp: str
    """The column holding the row's time (``*_ms``: epoch milliseconds)."""
    horizon: str
    """The :class:`Retention` field with its days."""
    keep: Callable[[], sa.ColumnElement[bool]] | None = None

    @property
    def kind(self) -> str:
        return self.horizon.removesuffix("_days")


def _unfinished_runs() -> sa.ColumnElement[bool]:
    r = ldb.handler_runs.c
    return sa.exists().where(r.inbox_id == ldb.inbox.c.id, r.state != "done")


def _running() -> sa.ColumnElement[bool]:
    running: sa.ColumnElement[bool] = pdb.manual_runs.c.state == "running"
    return running


PLATFORM_APPENDED = (
    _Appended(pdb.endpoint_events, "created_at", "endpoint_events_days"),
    _Appended(pdb.automation_entries, "entered_at", "entries_days"),
    _Appended(pdb.manual_runs, "started_at", "runs_days", keep=_running),
    _Appended(pdb.audit_log, "at", "audit_days"),
    _Appended(pdb.activities, "occurred_at", "activities_days"),
)
LISTENER_APPENDED = (
    _Appended(ldb.inbox, "received_at_ms", "inbox_days", keep=_unfinished_runs),
    _Appended(ldb.refusals, "minute_ms", "refusals_days"),
)
FINISHED = {"delivered": "delivered_days", "cancelled": "delivered_days", "failed": "failed_days"}
"""Delivery states retention may delete, and the horizon each one follows."""


# --- pruning ---------------------------------------------------------------------------------------


_Lock = Callable[[], AbstractContextManager[Any]]


def _cutoff(now: datetime, days: float, *, millis: bool) -> Any:
    when = now - timedelta(days=days)
    return int((when - datetime(1970, 1, 1)).total_seconds() * 1000) if millis else when


def _batches_appended(
    engine: sa.Engine, spec: _Appended, cutoff: Any, *, dry_run: bool, batch: int, lock: _Lock
) -> Iterator[int]:
    after = 0
    while True:
        with lock(), engine.begin() as conn:
            keep = spec.keep() if spec.keep is not None else None
            stamp = spec.table.c[spec.stamp]
            ids, after, done = _walk(conn, spec.table, stamp, cutoff, keep=keep, after=after, limit=batch)
            n = len(ids) if dry_run else _delete(conn, spec.table, ids)
        yield n  # outside the transaction: no lock is held between batches
        if done:
            return


def _batches_deliveries(
    engine: sa.Engine, state: str, cutoff: datetime, *, dry_run: bool, batch: int, lock: _Lock
) -> Iterator[int]:
    d = pdb.deliveries.c
    last = (datetime.min, 0)
    while True:
        with lock(), engine.begin() as conn:
            rows = conn.execute(
                sa.select(d.id, d.updated_at)
                .where(d.state == state, d.updated_at < cutoff, sa.tuple_(d.updated_at, d.id) > last)
                .order_by(d.updated_at, d.id)
                .limit(batch)
            ).all()
            if rows:
                last = (rows[-1].updated_at, rows[-1].id)
            ids = [int(r.id) for r in rows]
            if dry_run or not ids:
                n = len(ids)
            else:  # the state is checked again: a replay since the pick keeps its delivery
                n = int(conn.execute(pdb.deliveries.delete().where(d.id.in_(ids), d.state == state)).rowcount)
        yield n  # outside the transaction: no lock is held between batches
        if len(rows) < batch:
            return


def prune(
    engine: sa.Engine,
    retention: Retention,
    *,
    side: str,
    now: datetime,
    dry_run: bool = False,
    batch: int = BATCH_ROWS,
    pause_s: float = PAUSE_BETWEEN_BATCHES_S,
    should_stop: Callable[[], bool] = lambda: False,
    lock: _Lock = contextlib.nullcontext,
) -> Report:
    """Delete (or with ``dry_run`` count) what has outlived its horizon on ``side`` ("platform" or
    "listener"); ``now`` is naive UTC; ``lock`` is taken around each batch (the listener's SQLite
    write lock)."""
    report = Report()
    runs: list[tuple[str, Iterator[int]]] = []
    if side == "platform":
        for state, horizon in FINISHED.items():
            days = getattr(retention, horizon)
            if days > 0:
                cutoff = _cutoff(now, days, millis=False)
                runs.append(
                    (
                        f"deliveries.{state}",
                        _batches_deliveries(engine, state, cutoff, dry_run=dry_run, batch=batch, lock=lock),
                    )
                )
    specs = PLATFORM_APPENDED if side == "platform" else LISTENER_APPENDED
    for spec in specs:
        days = getattr(retention, spec.horizon)
        if days > 0:
            cutoff = _cutoff(now, days, millis=spec.stamp.endswith("_ms"))
            runs.append(
                (spec.kind, _batches_appended(engine, spec, cutoff, dry_run=dry_run, batch=batch, lock=lock))
            )
    for kind, batches in runs:
        report.add(kind, 0)
        for n in batches:
            report.add(kind, n)
            if should_stop():
                return report
            if n and pause_s:
                time.sleep(pause_s)
    return report


async def keep_pruning(
    engine: sa.Engine,
    retention: Retention,
    *,
    side: str,
    interval_s: float,
    clock: Callable[[], datetime],
    stop: asyncio.Event,
    lock: _Lock = contextlib.nullcontext,
) -> None:
    """Prune ``side`` every ``interval_s`` until ``stop`` is set (in a thread: batches block)."""
    wait_s = min(FIRST_PASS_AFTER_S, interval_s)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait_s)
        if stop.is_set():
            return
        wait_s = interval_s
        try:
            report = await asyncio.to_thread(
                prune, engine, retention, side=side, now=clock(), should_stop=stop.is_set, lock=lock
            )
        except sa.exc.SQLAlchemyError:
            log.exception("retention pass failed; trying again in %.0f s", interval_s)
            continue
        if report.total:
            log.info("retention deleted %s", report)
