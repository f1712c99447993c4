"""The platform's own syncs are webhooks the contact triggered: each delivered delivery becomes the
contact's ``webhook`` activity, and that activity fires ``webhook.triggered`` automations.

A job beside the dispatcher (never inside it: the dispatcher's cost per delivery stays as it is)
reads delivered deliveries in ``(updated_at, id)`` order through the ``(state, updated_at, id)``
index, from a cursor row in ``job_cursors``. In one transaction per batch it records the activities,
fires the automations they trigger (the ordinary :func:`~contactsync.automation.events.fire` path:
conditions and re-entry apply) and moves the cursor, so a crash repeats a batch whole or not at all.
Exactly once per delivery: the cursor row is locked by the pass that holds it (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL; SQLite has one writer), and the activity's unique ``delivery_id`` refuses a
second record anyway (a replayed delivery, delivered again later, is not recorded twice); only a
newly recorded activity fires.

Only rows older than the settle time are read: a delivery's ``updated_at`` is its dispatcher's clock
when its transaction began, so a transaction still open (or a clock behind) could commit a row
behind the cursor. The settle time covers that.

Loop guard: a sync never triggers the automation that sent it, and a delivery queued by an
automation that such an activity triggered (``deliveries.cause_activity_id``) is recorded as
activity but fires nothing, so chains stop after one hop.

Account boundary: activity rows hang off their contact (contact → list → account); a delivery is
recorded only when its contact still exists in a list of the delivery's own account.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from contactsync.automation.events import Hit, fire
from contactsync.automation.runtime import Runtime
from contactsync.automation.snapshot import chunked
from contactsync.db.backend import backend_of
from contactsync.db.platform import actions, activities, automations, contacts, deliveries, job_cursors, lists
from contactsync.delivery.states import DELIVERED
from contactsync.errors import ContactSyncError
from contactsync.settings import Settings
from contactsync.wire import sender

log = logging.getLogger("contactsync.automation.sync_activity")

JOB = "sync_activity"
BATCH = 500
EPOCH = datetime(1970, 1, 1)


@dataclass(slots=True)
class Recorded:
    """What one pass did: deliveries read, activities recorded, automation entries and deliveries."""

    read: int = 0
    recorded: int = 0
    entries: int = 0
    transactionids: list[int] = field(default_factory=list)
    held_elsewhere: bool = False
    """Another process holds the cursor (PostgreSQL): it records these; this pass did nothing."""


def webhook_name(automation_name: str | None, action_id: int | None, action_name: str = "") -> str:
    """How the activity names the webhook, as the receiver's headers do (wire/sender.py): "Welcome ·
    CRM", or "Welcome · action 3" for an unnamed action."""
    who = automation_name if automation_name is not None else "deleted automation"
    if action_id is None:
        return f"{who} · deleted action"
    return sender.display_name(action_id, who, action_name)


def _cursor(conn: sa.Connection) -> tuple[datetime, int] | None:
    """The job's position, locked for this transaction; None when another process holds it."""
    c = job_cursors.c
    backend = backend_of(conn)
    query = backend.skip_locked(sa.select(c.at, c.last_id).where(c.name == JOB))
    row = conn.execute(query).first()
    if row is not None:
        return row.at, int(row.last_id)
    # with row locks: missing, or locked by another pass (a plain read tells which)
    if backend.row_locks and conn.execute(sa.select(c.name).where(c.name == JOB)).first():
        return None
    conn.execute(backend.insert_ignoring(job_cursors).values(name=JOB, at=EPOCH, last_id=0))
    again = conn.execute(sa.select(c.at, c.last_id).where(c.name == JOB).with_for_update()).one()
    return again.at, int(again.last_id)


def _owned(conn: sa.Connection, rows: Sequence[Any]) -> dict[int, int]:
    """Contact id → its account, for the contacts of ``rows`` that still exist."""
    ids = sorted({int(r.contact_id) for r in rows if r.contact_id is not None})
    out: dict[int, int] = {}
    for part in chunked(ids):
        out.update(
            conn.execute(
                sa.select(contacts.c.id, lists.c.account_id)
                .join(lists, lists.c.id == contacts.c.list_id)
                .where(contacts.c.id.in_(part))
            ).all()
        )
    return out


def _names(conn: sa.Connection, rows: Sequence[Any]) -> dict[int, str]:
    ids = sorted({int(r.automation_id) for r in rows if r.automation_id is not None})
    out: dict[int, str] = {}
    for part in chunked(ids):
        out.update(
            conn.execute(
                sa.select(automations.c.id, automations.c.name).where(automations.c.id.in_(part))
            ).all()
        )
    return out


def _action_names(conn: sa.Connection, rows: Sequence[Any]) -> dict[int, str]:
    ids = sorted({int(r.action_id) for r in rows if r.action_id is not None})
    out: dict[int, str] = {}
    for part in chunked(ids):
        for action_id, settings in conn.execute(
            sa.select(actions.c.id, actions.c.settings).where(actions.c.id.in_(part))
        ):
            out[int(action_id)] = str((settings or {}).get("name") or "")
    return out


def record_batch(
    conn: sa.Connection, rt: Runtime, *, settled: datetime, batch: int = BATCH
) -> tuple[Recorded, bool]:
    """Record the next ``batch`` delivered deliveries older than ``settled`` and fire what they
    trigger, on the caller's transaction; returns what it did and whether more may be waiting."""
    done = Recorded()
    position = _cursor(conn)
    if position is None:
        done.held_elsewhere = True
        return done, False
    d = deliveries.c
    rows = conn.execute(
        sa.select(
            d.id,
            d.account_id,
            d.action_id,
            d.automation_id,
            d.contact_id,
            d.updated_at,
            d.delivered_at,
            d.cause_activity_id,
        )
        .where(d.state == DELIVERED, sa.tuple_(d.updated_at, d.id) > position, d.updated_at < settled)
        .order_by(d.updated_at, d.id)
        .limit(batch)
    ).all()
    done.read = len(rows)
    if not rows:
        return done, False
    owner = _owned(conn, rows)
    names = _names(conn, rows)
    action_names = _action_names(conn, rows)
    mine = [r for r in rows if r.contact_id is not None and owner.get(int(r.contact_id)) == r.account_id]
    new: dict[int, int] = {}  # delivery id -> its new activity's id
    if mine:
        values = [
            {
                "contact_id": r.contact_id,
                "kind": "webhook",
                "ref_id": r.action_id,
                "name": webhook_name(
                    names.get(r.automation_id), r.action_id, action_names.get(r.action_id or 0, "")
                ),
                "url": "",
                "value": None,
                "occurred_at": r.delivered_at or r.updated_at,
                "delivery_id": r.id,
            }
            for r in mine
        ]
        insert = backend_of(conn).insert_ignoring(activities)
        for start in range(0, len(values), 250):  # 8 parameters a row: well inside SQLite's limit
            part = values[start : start + 250]
            returned = conn.execute(insert.values(part).returning(activities.c.id, activities.c.delivery_id))
            new.update({int(delivery): int(aid) for aid, delivery in returned})
    done.recorded = len(new)
    # only what this pass recorded fires, and only syncs no recorded webhook caused (one hop)
    firing = [r for r in mine if r.id in new and r.cause_activity_id is None]
    hits = [
        Hit("webhook.triggered", int(r.contact_id), ref_id=r.action_id, not_automation=r.automation_id)
        for r in firing
    ]
    if hits:
        fired = fire(conn, rt, hits, now=rt.clock())
        done.entries, done.transactionids = fired.entries, list(fired.transactionids)
        _mark_caused(conn, fired.transactionids, {int(r.contact_id): new[r.id] for r in firing})
    last = rows[-1]
    conn.execute(
        job_cursors.update().where(job_cursors.c.name == JOB).values(at=last.updated_at, last_id=last.id)
    )
    return done, len(rows) == batch


def _mark_caused(conn: sa.Connection, transactionids: Sequence[int], cause_of: dict[int, int]) -> None:
    """Say which webhook activity each new delivery came from (the loop guard reads it)."""
    d = deliveries.c
    marks: list[dict[str, int]] = []
    for part in chunked(list(transactionids)):
        for did, cid in conn.execute(sa.select(d.id, d.contact_id).where(d.transactionid.in_(part))):
            if cid in cause_of:
                marks.append({"b_id": did, "b_cause": cause_of[cid]})
    if marks:
        conn.execute(
            deliveries.update()
            .where(d.id == sa.bindparam("b_id"))
            .values(cause_activity_id=sa.bindparam("b_cause")),
            marks,
        )


def record_pending(
    engine: sa.Engine,
    rt: Runtime,
    *,
    settle_s: float,
    batch: int = BATCH,
    should_stop: Callable[[], bool] = lambda: False,
) -> Recorded:
    """Record everything delivered (and settled) so far, one transaction per batch."""
    total = Recorded()
    while not should_stop():
        with engine.begin() as conn:
            settled = rt.clock() - timedelta(seconds=settle_s)
            one, more = record_batch(conn, rt, settled=settled, batch=batch)
        total.read += one.read
        total.recorded += one.recorded
        total.entries += one.entries
        total.transactionids += one.transactionids
        total.held_elsewhere |= one.held_elsewhere
        if not more:
            break
    return total


async def keep_recording(
    engine: sa.Engine,
    rt: Runtime,
    *,
    interval_s: float,
    settle_s: float,
    stop: asyncio.Event,
    wake: Callable[[], None] = lambda: None,
) -> None:
    """Record delivered syncs every ``interval_s`` until ``stop`` is set; ``wake`` tells an
    in-process dispatcher about the deliveries the fired automations queued (SQLite has no NOTIFY)."""
    if interval_s <= 0:
        return
    while not stop.is_set():
        try:
            done = await asyncio.to_thread(
                record_pending, engine, rt, settle_s=settle_s, should_stop=stop.is_set
            )
        except (sa.exc.SQLAlchemyError, ContactSyncError):
            log.exception("recording delivered syncs as activity failed; trying again in %.1f s", interval_s)
        else:
            if done.transactionids:
                wake()
            if done.recorded:
                log.info("recorded %d delivered syncs as activity (%d entries)", done.recorded, done.entries)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def worker_job(
    engine: sa.Engine, settings: Settings, stop: asyncio.Event, wake: Callable[[], None]
) -> Coroutine[Any, Any, None]:
    """The job as ``contactsync worker`` runs it beside its dispatcher (a runtime of its own)."""

    async def run() -> None:
        rt = await asyncio.to_thread(Runtime.create, settings, engine=engine)
        await keep_recording(
            engine,
            rt,
            interval_s=settings.sync_activity_interval_s,
            settle_s=settings.sync_activity_settle_s,
            stop=stop,
            wake=wake,
        )

    return run()
