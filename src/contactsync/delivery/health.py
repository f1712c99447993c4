"""Endpoint health: five days of continuous failure disable an endpoint (delivery.md "Endpoint health").

The rule is pure (:func:`should_disable`); :func:`sweep` applies it to the ``endpoints`` table. An
endpoint edited in the last 48 h is spared — the owner is evidently working on it. Disabling leaves
deliveries waiting (nothing is dropped) and notifies the owner: an ``endpoint_events`` row, a log
line and a metric.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from contactsync.db.platform import endpoints
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery.metrics import DeliveryMetrics

FAILURE_WINDOW = timedelta(days=5)
EDIT_GRACE = timedelta(hours=48)
AUTO_DISABLED = "auto_disabled"


def should_disable(
    *,
    failing_since: datetime | None,
    edited_at: datetime | None,
    disabled_at: datetime | None,
    now: datetime,
    failure_window: timedelta = FAILURE_WINDOW,
    edit_grace: timedelta = EDIT_GRACE,
) -> bool:
    """Whether an endpoint that has not succeeded since ``failing_since`` is to be disabled now."""
    if disabled_at is not None or failing_since is None:
        return False
    if edited_at is not None and now - edited_at < edit_grace:
        return False
    return now - failing_since >= failure_window


def sweep(
    conn: sa.Connection,
    *,
    now: datetime,
    metrics: DeliveryMetrics | None = None,
    failure_window: timedelta = FAILURE_WINDOW,
    edit_grace: timedelta = EDIT_GRACE,
) -> list[endpoint_rows.EndpointKey]:
    """Disable every endpoint the rule condemns (each account's on its own); returns them."""
    e = endpoints.c
    rows = conn.execute(
        sa.select(e.account_id, e.endpoint, e.failing_since, e.edited_at, e.disabled_at)
        .where(e.disabled_at.is_(None), e.failing_since <= now - failure_window)
        .order_by(e.account_id, e.endpoint)
    ).all()
    disabled = []
    for row in rows:
        if not should_disable(
            failing_since=row.failing_since,
            edited_at=row.edited_at,
            disabled_at=row.disabled_at,
            now=now,
            failure_window=failure_window,
            edit_grace=edit_grace,
        ):
            continue
        days = (now - row.failing_since).total_seconds() / 86400
        reason = f"no successful delivery for {days:.1f} days (since {row.failing_since:%Y-%m-%d %H:%M} UTC)"
        key = endpoint_rows.EndpointKey(row.account_id, row.endpoint)
        if endpoint_rows.disable(conn, key, reason=reason, now=now, kind=AUTO_DISABLED):
            disabled.append(key)
            if metrics is not None:
                metrics.endpoint_disables.labels(AUTO_DISABLED).inc()
    return disabled
