"""Is anything sending? Dispatchers note that they are alive; a server can tell when none is.

``contactsync serve`` without ``--with-worker`` leaves deliveries to ``contactsync worker``
processes. When deliveries are due and no dispatcher has been seen for a minute, nothing will send
them: the server warns in its log and the dashboard says so, instead of leaving them pending quietly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from contactsync.db.backend import backend_of
from contactsync.db.platform import deliveries, dispatchers
from contactsync.delivery.states import PENDING

ALIVE_WITHIN_S = 60.0
FORGOTTEN_AFTER = timedelta(days=1)
"""A dispatcher not seen for this long is removed from the table (it stopped long ago)."""
DUE_COUNTED_UP_TO = 1000


@dataclass(frozen=True, slots=True)
class Stall:
    """Deliveries are due and no dispatcher is alive."""

    due: int
    """How many are due (counted up to :data:`DUE_COUNTED_UP_TO`)."""
    last_seen_at: datetime | None

    def __str__(self) -> str:
        many = f"{self.due}+" if self.due >= DUE_COUNTED_UP_TO else str(self.due)
        seen = (
            f"last seen {self.last_seen_at:%Y-%m-%d %H:%M:%S} UTC" if self.last_seen_at else "none ever ran"
        )
        return (
            f"{many} deliveries are due and no dispatcher is running ({seen}): start `contactsync worker` "
            "or serve with --with-worker"
        )


def beat(conn: sa.Connection, owner: str, *, started_at: datetime, now: datetime) -> None:
    """Note that ``owner`` is alive; forget dispatchers gone for a day."""
    stmt = (
        backend_of(conn)
        .insert_on_conflict(dispatchers)
        .values(owner=owner[:100], started_at=started_at, last_seen_at=now)
    )
    conn.execute(stmt.on_conflict_do_update(index_elements=["owner"], set_={"last_seen_at": now}))
    conn.execute(dispatchers.delete().where(dispatchers.c.last_seen_at < now - FORGOTTEN_AFTER))


def gone(conn: sa.Connection, owner: str) -> None:
    """A dispatcher that stops says so (the next one's absence is then noticed at once)."""
    conn.execute(dispatchers.delete().where(dispatchers.c.owner == owner[:100]))


def stall(conn: sa.Connection, *, now: datetime, alive_within_s: float = ALIVE_WITHIN_S) -> Stall | None:
    """A :class:`Stall` when deliveries are due and no dispatcher was seen within ``alive_within_s``."""
    last = conn.execute(sa.select(sa.func.max(dispatchers.c.last_seen_at))).scalar()
    if last is not None and last >= now - timedelta(seconds=alive_within_s):
        return None
    d = deliveries.c
    due_rows = (  # in the (state, next_attempt_at, id) index's order, so that index is what is read
        sa.select(d.id)
        .where(d.state == PENDING, d.next_attempt_at <= now)
        .order_by(d.next_attempt_at)
        .limit(DUE_COUNTED_UP_TO)
    )
    due = int(conn.execute(sa.select(sa.func.count()).select_from(due_rows.subquery())).scalar_one())
    return Stall(due=due, last_seen_at=last) if due else None
