"""Re-entry decided by the database: one upsert of the (automation, contact) gate row per entry.

Reading recent entries and then inserting lets every concurrent transaction see "no recent entry"
under PostgreSQL's READ COMMITTED, so a burst of events for one contact entered ``once per N hours``
automations several times. Instead each entry upserts ``reentry_gates`` and the conflict clause holds
the policy:

* ``once``: insert, or nothing if the contact ever entered;
* ``per_hours``: insert, or move ``last_entered_at`` only when it is at least N hours old;
* ``always``: insert, or move ``last_entered_at`` forward (kept for a later change of policy).

Only contacts whose row was inserted or updated come back. On PostgreSQL a transaction upserting a
row another one has written waits for it to end, then judges the committed row (``INSERT … ON
CONFLICT`` is atomic under READ COMMITTED), so exactly one of a burst gets in. On SQLite each
transaction holds the write lock from ``BEGIN IMMEDIATE``. Rows are written in (automation, contact)
order in every transaction, so waits cannot form a cycle.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from contactsync.automation.rules import Reentry
from contactsync.automation.snapshot import chunked
from contactsync.db.backend import IDS, Backend, ConflictInsert, backend_of
from contactsync.db.bulk import insert_per_id
from contactsync.db.platform import reentry_gates


@functools.cache
def gate_statement(backend: Backend, policy: str) -> sa.Insert:
    """The upsert that admits contacts under ``policy``, built once per database (``b_cutoff``: entries
    after it are recent). With array parameters (PostgreSQL) one execution admits every id of the
    ``ids`` array (:func:`~contactsync.db.bulk.insert_per_id`); elsewhere it runs with one parameter
    set per contact."""
    g = reentry_gates.c
    stmt: ConflictInsert
    if backend.arrays:
        stmt = insert_per_id(
            reentry_gates, "contact_id", {"automation_id": sa.BigInteger(), "last_entered_at": sa.DateTime()}
        )
    else:
        stmt = backend.insert_on_conflict(reentry_gates)
    keys = [g.automation_id, g.contact_id]
    if policy == "once":
        decided = stmt.on_conflict_do_nothing(index_elements=keys)
    elif policy == "per_hours":
        decided = stmt.on_conflict_do_update(
            index_elements=keys,
            set_={"last_entered_at": stmt.excluded.last_entered_at},
            # entered at least N hours ago: the same boundary as "within the last N hours" excludes
            where=g.last_entered_at <= sa.bindparam("b_cutoff", type_=sa.DateTime()),
        )
    else:
        newer = stmt.excluded.last_entered_at
        decided = stmt.on_conflict_do_update(
            index_elements=keys,
            set_={"last_entered_at": sa.case((newer > g.last_entered_at, newer), else_=g.last_entered_at)},
        )
    return decided.returning(g.contact_id)


def admit(
    conn: sa.Connection, automation_id: int, reentry: Reentry, contact_ids: Sequence[int], *, now: datetime
) -> list[int]:
    """Of ``contact_ids``, those who may enter the automation now; their gate rows are written."""
    ids = sorted(set(contact_ids))
    if not ids:
        return []
    backend = backend_of(conn)
    stmt = gate_statement(backend, reentry.policy)
    extra = {"b_cutoff": now - timedelta(hours=reentry.hours or 0)} if reentry.policy == "per_hours" else {}
    if backend.arrays:
        params = {IDS: ids, "automation_id": automation_id, "last_entered_at": now, **extra}
        return sorted(conn.execute(stmt, params).scalars())
    admitted: list[int] = []
    for part in chunked(ids):
        rows = [
            {"automation_id": automation_id, "contact_id": cid, "last_entered_at": now, **extra}
            for cid in part
        ]
        admitted.extend(conn.execute(stmt, rows).scalars())
    return sorted(admitted)
