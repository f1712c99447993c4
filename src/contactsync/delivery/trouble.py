"""What is going wrong now, and where: deliveries retrying, given up, and each automation's health.

A delivery is *retrying* when it is pending after at least one attempt: every attempt so far failed
and the next is scheduled. The state machine calls it ``pending`` (it waits, like a new one), which
is how a dashboard once said "failed 0" and "all healthy" while a new action had been refused for
nine minutes. Here retrying is its own figure, counted against the account, each automation and
each endpoint, and grouped by automation and action with the latest error, so a page can say what is
wrong and where.

Reads only, through small partial indexes holding the retrying deliveries alone and the
(automation, state, updated_at) index: every figure is a capped count or an index probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import sqlalchemy as sa

from contactsync.db.counting import Count, capped, matching
from contactsync.db.platform import RETRYING, automations, deliveries

RETRYING_STATE = "retrying"
"""What pages and filters call a retrying delivery (its state in the table is ``pending``)."""
RECENT = timedelta(hours=24)
GROUPS_READ = 1000
"""Retrying deliveries read to group them by action: the newest; counts past them are capped counts."""

Level = Literal["failing", "degraded", "healthy", "idle"]


@dataclass(frozen=True, slots=True)
class Health:
    """One automation's deliveries: retrying now, given up in the last 24 h, and the last success."""

    retrying: Count
    failed_recently: Count
    last_success_at: datetime | None
    now: datetime
    last_failure_at: datetime | None = None
    """When the newest retrying delivery's latest attempt failed."""

    @property
    def level(self) -> Level:
        """``failing``: trouble, and nothing went through since the latest failure (or for a day);
        ``degraded``: trouble beside successes that came after it."""
        recent_success = self.last_success_at is not None and self.now - self.last_success_at < RECENT
        if self.retrying or self.failed_recently:
            if not recent_success or self.last_success_at is None:
                return "failing"
            if self.last_failure_at is not None and self.last_failure_at >= self.last_success_at:
                return "failing"
            return "degraded"
        return "healthy" if self.last_success_at is not None else "idle"


@dataclass(frozen=True, slots=True)
class Trouble:
    """Retrying deliveries of one action (of those read): how many, its latest error, the next try."""

    automation_id: int | None
    automation: str
    action_id: int | None
    endpoint: str
    retrying: int
    last_status: int | None
    last_error: str
    next_attempt_at: datetime


def retrying(conn: sa.Connection, *, account_id: int, endpoint: str | None = None) -> Count:
    """The account's retrying deliveries (to one endpoint if given), a capped count."""
    d = deliveries.c
    if endpoint is None:
        return capped(conn, matching(deliveries, RETRYING, d.account_id == account_id, by=d.id))
    return capped(
        conn, matching(deliveries, RETRYING, d.account_id == account_id, d.endpoint == endpoint, by=d.id)
    )


def health(
    conn: sa.Connection, automation_ids: Sequence[int], *, account_id: int, now: datetime
) -> dict[int, Health]:
    """Health of each automation (the caller shows a page of them: three index reads each)."""
    d = deliveries.c
    since = now - RECENT
    out: dict[int, Health] = {}
    for aid in automation_ids:
        mine = (d.automation_id == aid, d.account_id == account_id)
        last = conn.execute(
            sa.select(d.updated_at)
            .where(*mine, d.state == "delivered")
            .order_by(d.automation_id, d.state, d.updated_at.desc())
            .limit(1)
        ).scalar()
        failure = conn.execute(  # the newest retrying delivery, from the retrying rows' own index
            sa.select(d.updated_at).where(RETRYING, *mine).order_by(d.automation_id, d.id.desc()).limit(1)
        ).scalar()
        out[aid] = Health(
            retrying=capped(conn, matching(deliveries, RETRYING, *mine, by=d.id)),
            failed_recently=capped(
                conn, matching(deliveries, *mine, d.state == "failed", d.updated_at >= since, by=d.updated_at)
            ),
            last_success_at=last,
            now=now,
            last_failure_at=failure,
        )
    return out


def troubles(conn: sa.Connection, *, account_id: int, limit: int = GROUPS_READ) -> list[Trouble]:
    """The account's newest retrying deliveries grouped by action, most retrying first."""
    d = deliveries.c
    rows = conn.execute(
        sa.select(
            d.automation_id,
            sa.func.coalesce(automations.c.name, "").label("automation"),
            d.action_id,
            d.endpoint,
            d.last_status,
            d.last_error,
            d.next_attempt_at,
        )
        .outerjoin(automations, automations.c.id == d.automation_id)
        .where(RETRYING, d.account_id == account_id)
        .order_by(d.account_id, d.id.desc())
        .limit(limit)
    ).all()
    groups: dict[tuple[int | None, int | None], Trouble] = {}
    for r in rows:  # newest first: the first row of a group carries its latest error
        key = (r.action_id, r.automation_id)
        seen = groups.get(key)
        if seen is None:
            groups[key] = Trouble(
                r.automation_id,
                r.automation,
                r.action_id,
                r.endpoint,
                1,
                r.last_status,
                r.last_error or "",
                r.next_attempt_at,
            )
        else:
            groups[key] = Trouble(
                seen.automation_id,
                seen.automation,
                seen.action_id,
                seen.endpoint,
                seen.retrying + 1,
                seen.last_status,
                seen.last_error,
                min(seen.next_attempt_at, r.next_attempt_at),
            )
    return sorted(groups.values(), key=lambda t: (-t.retrying, t.automation, t.action_id or 0))
