"""Endpoint health: 5 days of continuous failure disable an endpoint, not within 48 h of an edit."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from contactsync.db import platform as t
from contactsync.delivery import endpoints as ep
from contactsync.delivery import health
from contactsync.delivery.metrics import DeliveryMetrics

NOW = datetime(2026, 3, 10, 12, 0, 0)
DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("failing_since", "edited_at", "disabled_at", "expected"),
    [
        (None, None, None, False),
        (NOW - 4 * DAY, None, None, False),
        (NOW - 5 * DAY, None, None, True),
        (NOW - 9 * DAY, NOW - timedelta(hours=47), None, False),
        (NOW - 9 * DAY, NOW - timedelta(hours=48), None, True),
        (NOW - 9 * DAY, None, NOW - DAY, False),
    ],
)
def test_rule(
    failing_since: datetime | None, edited_at: datetime | None, disabled_at: datetime | None, expected: bool
) -> None:
    assert (
        health.should_disable(
            failing_since=failing_since, edited_at=edited_at, disabled_at=disabled_at, now=NOW
        )
        is expected
    )


def test_sweep_disables_notifies_and_counts(engine: sa.Engine) -> None:
    names = {
        "failing": ep.EndpointKey(1, "https://a.test:443"),
        "recent": ep.EndpointKey(1, "https://b.test:443"),
        "edited": ep.EndpointKey(1, "https://c.test:443"),
        "healthy": ep.EndpointKey(1, "https://d.test:443"),
    }
    with engine.begin() as conn:
        ep.record_outcomes(conn, {names["failing"]: False, names["edited"]: False}, now=NOW - 6 * DAY)
        ep.record_outcomes(conn, {names["recent"]: False}, now=NOW - 4 * DAY)
        ep.record_outcomes(conn, {names["healthy"]: False}, now=NOW - 6 * DAY)
        ep.record_outcomes(conn, {names["healthy"]: True}, now=NOW - DAY)
        ep.mark_edited(conn, names["edited"], now=NOW - DAY)
    registry = CollectorRegistry()
    metrics = DeliveryMetrics(registry)
    with engine.begin() as conn:
        assert health.sweep(conn, now=NOW, metrics=metrics) == [names["failing"]]
        assert health.sweep(conn, now=NOW, metrics=metrics) == []
        assert ep.disabled(conn) == [names["failing"]]
        event = conn.execute(sa.select(t.endpoint_events)).one()
        metrics.refresh(conn, now=NOW)
    assert event.kind == "auto_disabled"
    assert "no successful delivery for 6.0 days" in event.message
    assert registry.get_sample_value("contactsync_endpoint_disables_total", {"reason": "auto_disabled"}) == 1
    assert registry.get_sample_value("contactsync_endpoints_disabled") == 1
    with engine.begin() as conn:  # re-enabling starts the failure streak afresh
        assert ep.enable(conn, names["failing"], now=NOW)
        assert health.sweep(conn, now=NOW + DAY) == [names["recent"], names["edited"]]  # their turn
