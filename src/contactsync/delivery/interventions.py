"""What an operator does to deliveries by hand: cancel, replay, recover a backlog of failures.

Each is a state-machine transition (:mod:`~contactsync.delivery.states`) over chosen rows, in the
caller's transaction; a replay wakes the dispatchers (:func:`~contactsync.delivery.outbox.notify`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from contactsync.db.counting import Count, capped, matching
from contactsync.db.platform import RETRYING, deliveries
from contactsync.delivery.outbox import notify
from contactsync.delivery.states import FAILED, NO_LEASE, PENDING, move, naive

NEVER_RENDERED = (
    "cancelled before its delay ended, so never rendered: it holds the request as at the trigger, "
    "which a replay sends"
)


def _unmark() -> dict[str, Any]:
    """Values of a cancel: a delivery waiting to be rendered keeps its trigger-time request for good
    (the render job only takes pending rows, so a cancelled one would linger in its index)."""
    d = deliveries.c
    return {
        "render_pending": None,
        "render_note": sa.case((d.render_pending.is_not(None), NEVER_RENDERED), else_=d.render_note),
    }


def cancel(conn: sa.Connection, ids: Sequence[int], *, now: datetime) -> int:
    """Stop pending or failed deliveries for good (an in-flight attempt finishes first)."""
    return move(conn, "cancel", deliveries.c.id.in_(list(ids)), _unmark(), now=now).rowcount if ids else 0


ACTION_DELETED = "cancelled: its action was deleted, so it cannot be signed"


def cancel_for_actions(conn: sa.Connection, action_ids: Sequence[int], *, now: datetime) -> int:
    """Cancel the pending deliveries of actions about to be deleted (a delivery is never sent unsigned).

    Call before deleting: once the action is gone its deliveries no longer name it. One still in
    flight finishes its attempt; should that end in a retry, the dispatcher fails it (no secret).
    """
    if not action_ids:
        return 0
    where = deliveries.c.action_id.in_(list(action_ids))
    values = {"last_error": ACTION_DELETED, **NO_LEASE, **_unmark()}
    return int(move(conn, "cancel", where, values, now=now).rowcount)


def pending_for_actions(conn: sa.Connection, action_ids: Sequence[int]) -> Count:
    """How many deliveries :func:`cancel_for_actions` would cancel (what the UI asks to confirm),
    counted up to a cap: a backlog of millions shows "10,000+" instead of being read whole."""
    if not action_ids:
        return Count(0)
    d = deliveries.c
    wanted = matching(
        deliveries, d.action_id.in_(list(action_ids)), d.state.in_([PENDING, FAILED]), by=d.action_id
    )
    return capped(conn, wanted)


def replay(conn: sa.Connection, ids: Sequence[int], *, now: datetime) -> int:
    """Send failed, cancelled or delivered deliveries again, now, with a fresh retry schedule; a
    retrying one (pending after failed attempts) is tried now, its schedule going on from there."""
    if not ids:
        return 0
    notify(conn)
    chosen = deliveries.c.id.in_(list(ids))
    replayed = move(conn, "replay", chosen, _replay_values(now), now=now).rowcount
    hurried = move(conn, "hurry", sa.and_(chosen, RETRYING), {"next_attempt_at": now}, now=now).rowcount
    return replayed + hurried


def recover_since(
    conn: sa.Connection, *, action_id: int, since: datetime, now: datetime, limit: int | None = None
) -> int:
    """Retry failed deliveries of ``action_id`` created at or after ``since``; returns how many.

    With ``limit``, at most that many (oldest first): call in a loop, one transaction per chunk,
    to show progress and keep transactions short on large backlogs.
    """
    d = deliveries.c
    where = sa.and_(d.action_id == action_id, d.created_at >= naive(since), d.state == FAILED)
    if limit is not None:
        ids = list(conn.execute(sa.select(d.id).where(where).order_by(d.id).limit(limit)).scalars())
        if not ids:
            return 0
        where = sa.and_(where, d.id.in_(ids))
    notify(conn)
    return move(conn, "replay", where, _replay_values(now), now=now).rowcount


def count_failed_since(conn: sa.Connection, *, action_id: int, since: datetime) -> int:
    """How many deliveries :func:`recover_since` would retry."""
    d = deliveries.c
    where = sa.and_(d.action_id == action_id, d.created_at >= naive(since), d.state == FAILED)
    return int(conn.execute(sa.select(sa.func.count()).where(where)).scalar_one())


def _replay_values(now: datetime) -> dict[str, Any]:
    return {**NO_LEASE, "next_attempt_at": now, "attempt_count": 0, "delivered_at": None}
