"""How much the outbox holds and how long it has waited: queue depth per state, the oldest due.

Read by the metrics endpoint and the dashboard, apart from the writes of :mod:`~contactsync.delivery.outbox`.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from contactsync.db.platform import deliveries
from contactsync.delivery.states import CANCELLED, DELIVERED, FAILED, IN_FLIGHT, PENDING


def counts_by_state(conn: sa.Connection) -> dict[str, int]:
    """Queue depth per state (every state present, zero when empty)."""
    d = deliveries.c
    found: dict[str, int] = dict(conn.execute(sa.select(d.state, sa.func.count()).group_by(d.state)).all())
    return {state: int(found.get(state, 0)) for state in (PENDING, IN_FLIGHT, DELIVERED, FAILED, CANCELLED)}


def oldest_due(conn: sa.Connection, *, account_id: int | None = None) -> datetime | None:
    """When the longest-waiting unfinished delivery (of one account, or of all) became due: the first
    row of the (state, next_attempt_at, id) index for each unfinished state, whatever the outbox's size."""
    d = deliveries.c
    found = []
    for state in (PENDING, IN_FLIGHT):
        query = sa.select(d.next_attempt_at).where(d.state == state).order_by(d.next_attempt_at).limit(1)
        if account_id is not None:
            query = query.where(d.account_id == account_id)
        found.append(conn.execute(query).scalar())
    return min((at for at in found if at is not None), default=None)
