"""Dashboard figures read from the platform database: attempts per minute, latency, health.

Reads only (the delivery modules own every write). An account's dashboard counts its own rows only;
the operator's page lists the troubled endpoints of every account. Buckets are computed in Python
from one bounded query (the last hour's attempts, through their ``started_at`` index) so SQLite and
PostgreSQL give the same minutes without database-specific date functions.

Nothing here reads a whole table: deliveries by state and those waiting on an endpoint are capped
counts (:mod:`contactsync.db.counting`, "10,000+"), and the longest wait is the first row of the
(state, next_attempt_at, id) index.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from contactsync.automation.action_settings import stored_label
from contactsync.db.counting import Count, capped, matching
from contactsync.db.platform import (
    DELIVERY_STATES,
    accounts,
    actions,
    deliveries,
    delivery_attempts,
    endpoint_events,
    endpoints,
)
from contactsync.db.retention import Retention
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery import presence, trouble
from contactsync.delivery.backlog import oldest_due
from contactsync.delivery.endpoints import EndpointKey
from contactsync.delivery.trouble import Trouble
from contactsync.web import charts
from contactsync.web.filters import WORDS

WINDOW_MIN = 60
MAX_ATTEMPTS_READ = 200_000


@dataclass(frozen=True, slots=True)
class Dashboard:
    states: dict[str, Count]
    retrying: Count
    """Pending after a failed attempt (counted among ``states["pending"]`` too)."""
    troubles: list[Trouble]
    """The newest retrying deliveries grouped by action: what is wrong, and where."""
    action_labels: dict[int, str]
    """The troubled actions as people know them (their name, else where they send)."""
    attempts_chart: str
    latency_chart: str
    attempts_in_window: int
    attempts_capped: bool
    """More attempts than :data:`MAX_ATTEMPTS_READ` in the window: the figures are of the newest."""
    success_rate: float | None
    oldest_due: datetime | None
    """When the longest-waiting pending or in-flight delivery became due."""
    waited_s: float | None
    """How long it has waited since (0 while nothing is overdue)."""
    endpoints: list[dict[str, object]]
    events: list[dict[str, object]]
    stall: str | None
    """Why nothing is sending (deliveries due and no dispatcher alive), or None."""


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def dashboard(
    conn: sa.Connection, *, account_id: int, now: datetime, window_min: int = WINDOW_MIN
) -> Dashboard:
    """Everything an account's dashboard shows, for the last ``window_min`` minutes up to ``now``."""
    start = _minute(now) - timedelta(minutes=window_min - 1)
    a = delivery_attempts.c
    rows = conn.execute(
        sa.select(a.started_at, a.outcome, a.duration_ms)
        .where(a.account_id == account_id, a.started_at >= start)
        .order_by(a.started_at.desc())
        .limit(MAX_ATTEMPTS_READ)
    ).all()
    minutes = [start + timedelta(minutes=i) for i in range(window_min)]
    index = {m: i for i, m in enumerate(minutes)}
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * window_min)
    latency_sum = [0.0] * window_min
    latency_n = [0] * window_min
    ok = 0
    for started_at, outcome, duration_ms in rows:
        i = index.get(_minute(started_at))
        if i is None:
            continue
        counts[outcome][i] += 1
        latency_sum[i] += float(duration_ms or 0.0)
        latency_n[i] += 1
        ok += outcome == "success"
    labels = [m.strftime("%H:%M") for m in minutes]
    latency = [latency_sum[i] / latency_n[i] if latency_n[i] else None for i in range(window_min)]
    d = deliveries.c
    oldest = oldest_due(conn, account_id=account_id)
    stalled = presence.stall(conn, now=now)
    troubles = trouble.troubles(conn, account_id=account_id)
    return Dashboard(
        states={
            state: capped(
                conn,
                matching(deliveries, d.account_id == account_id, d.state == state, by=(d.endpoint, d.id)),
            )
            for state in DELIVERY_STATES
        },
        retrying=trouble.retrying(conn, account_id=account_id),
        troubles=troubles,
        action_labels=_action_labels(conn, [t.action_id for t in troubles if t.action_id is not None]),
        attempts_chart=charts.stacked_bars(
            labels, dict(counts), title="Attempts per minute by outcome", names=WORDS
        ),
        latency_chart=charts.line(labels, latency, title="Mean attempt latency per minute", unit="ms"),
        attempts_in_window=len(rows),
        attempts_capped=len(rows) >= MAX_ATTEMPTS_READ,
        success_rate=ok / len(rows) if rows else None,
        oldest_due=oldest,
        waited_s=max((now - oldest).total_seconds(), 0.0) if oldest else None,
        endpoints=troubled_endpoints(conn, account_id=account_id),
        events=endpoint_news(conn, account_id=account_id),
        stall=str(stalled) if stalled is not None else None,
    )


def _action_labels(conn: sa.Connection, action_ids: list[int]) -> dict[int, str]:
    if not action_ids:
        return {}
    rows = conn.execute(sa.select(actions.c.id, actions.c.settings).where(actions.c.id.in_(action_ids)))
    return {int(r.id): stored_label(r.settings, r.id) for r in rows}


def retention_text(retention: Retention) -> str:
    """What the history keeps, in a sentence for the dashboard."""

    def kept(days: float) -> str:
        return "forever" if days <= 0 else f"{days:g} days"

    r = retention
    return (
        f"Delivered and cancelled deliveries are kept {kept(r.delivered_days)}, failed ones "
        f"{kept(r.failed_days)} (each with its attempts); endpoint events {kept(r.endpoint_events_days)}, "
        f"automation entries {kept(r.entries_days)}, finished manual runs {kept(r.runs_days)}, "
        f"the audit log {kept(r.audit_days)}, marketing activity {kept(r.activities_days)}."
    )


def endpoint_news(conn: sa.Connection, *, account_id: int | None, limit: int = 10) -> list[dict[str, object]]:
    """The latest endpoint events of one account (None: of every account, for the operator)."""
    query = sa.select(endpoint_events).order_by(endpoint_events.c.id.desc()).limit(limit)
    if account_id is not None:
        query = query.where(endpoint_events.c.account_id == account_id)
    return [dict(r._mapping) for r in conn.execute(query)]


def troubled_endpoints(conn: sa.Connection, *, account_id: int | None) -> list[dict[str, object]]:
    """Endpoints disabled or in a failure streak, with how many deliveries wait for each (a capped
    count): one account's, or with None every account's (the operator's view: endpoints are per account)."""
    e = endpoints.c
    query = (
        sa.select(
            e.id,
            e.account_id,
            accounts.c.name.label("account"),
            e.endpoint,
            e.disabled_at,
            e.disabled_reason,
            e.failing_since,
            e.last_success_at,
        )
        .join(accounts, accounts.c.id == e.account_id)
        .where(sa.or_(e.disabled_at.is_not(None), e.failing_since.is_not(None)))
        .order_by(e.disabled_at.is_(None), e.endpoint, e.account_id)
    )
    if account_id is not None:
        query = query.where(e.account_id == account_id)
    found = []
    for row in conn.execute(query):
        waiting = endpoint_rows.waiting(conn, EndpointKey(row.account_id, row.endpoint))
        found.append({**row._mapping, "waiting": waiting})
    return found
