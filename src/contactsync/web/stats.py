"""Dashboard figures read from the platform database: attempts per minute, latency, health.

Reads only (the outbox module owns every write). An account's dashboard counts its own rows only;
the operator's page lists the troubled endpoints of every account. Buckets are computed in Python
from one bounded query so SQLite and PostgreSQL give the same minutes without dialect date functions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from contactsync.db.platform import (
    DELIVERY_STATES,
    accounts,
    deliveries,
    delivery_attempts,
    endpoint_events,
    endpoints,
)
from contactsync.web import charts

WINDOW_MIN = 60
MAX_ATTEMPTS_READ = 200_000


@dataclass(frozen=True, slots=True)
class Dashboard:
    states: dict[str, int]
    attempts_chart: str
    latency_chart: str
    attempts_in_window: int
    success_rate: float | None
    oldest_pending: datetime | None
    oldest_pending_age_s: float | None
    endpoints: list[dict[str, object]]
    events: list[dict[str, object]]


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
    oldest = conn.execute(
        sa.select(sa.func.min(d.created_at)).where(
            d.account_id == account_id, d.state.in_(["pending", "in_flight"])
        )
    ).scalar()
    found: dict[str, int] = dict(
        conn.execute(
            sa.select(d.state, sa.func.count()).where(d.account_id == account_id).group_by(d.state)
        ).all()
    )
    return Dashboard(
        states={state: int(found.get(state, 0)) for state in DELIVERY_STATES},
        attempts_chart=charts.stacked_bars(labels, dict(counts), title="Attempts per minute by outcome"),
        latency_chart=charts.line(labels, latency, title="Mean attempt latency per minute", unit="ms"),
        attempts_in_window=len(rows),
        success_rate=ok / len(rows) if rows else None,
        oldest_pending=oldest,
        oldest_pending_age_s=(now - oldest).total_seconds() if oldest else None,
        endpoints=troubled_endpoints(conn, account_id=account_id),
        events=endpoint_news(conn, account_id=account_id),
    )


def endpoint_news(conn: sa.Connection, *, account_id: int | None, limit: int = 10) -> list[dict[str, object]]:
    """The latest endpoint events of one account (None: of every account, for the operator)."""
    query = sa.select(endpoint_events).order_by(endpoint_events.c.id.desc()).limit(limit)
    if account_id is not None:
        query = query.where(endpoint_events.c.account_id == account_id)
    return [dict(r._mapping) for r in conn.execute(query)]


def troubled_endpoints(conn: sa.Connection, *, account_id: int | None) -> list[dict[str, object]]:
    """Endpoints disabled or in a failure streak, with how many deliveries wait for each: one
    account's, or with None every account's (the operator's view: endpoints are per account)."""
    e = endpoints.c
    d = deliveries.c
    waiting = (
        sa.select(sa.func.count())
        .where(d.account_id == e.account_id, d.endpoint == e.endpoint, d.state.in_(["pending", "in_flight"]))
        .scalar_subquery()
    )
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
            waiting.label("waiting"),
        )
        .join(accounts, accounts.c.id == e.account_id)
        .where(sa.or_(e.disabled_at.is_not(None), e.failing_since.is_not(None)))
        .order_by(e.disabled_at.is_(None), e.endpoint, e.account_id)
    )
    if account_id is not None:
        query = query.where(e.account_id == account_id)
    return [dict(r._mapping) for r in conn.execute(query)]
