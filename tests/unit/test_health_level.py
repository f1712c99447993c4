"""An automation's health says what its latest signal says: red while nothing got through since it
last failed, amber when successes came after the failures, and never "healthy" while one retries."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from contactsync.db.counting import Count
from contactsync.delivery.trouble import Health

NOW = datetime(2026, 11, 27, 12, 0)
AGO = {m: NOW - timedelta(minutes=m) for m in (1, 5, 10)}


@pytest.mark.parametrize(
    ("retrying", "gave_up", "success", "failure", "level"),
    [
        (0, 0, None, None, "idle"),
        (0, 0, AGO[5], None, "healthy"),
        (1, 0, None, AGO[1], "failing"),  # never went through
        (1, 0, AGO[10], AGO[1], "failing"),  # went through, then broke: nothing since
        (1, 0, AGO[1], AGO[5], "degraded"),  # a success after the latest failure
        (0, 2, AGO[1], None, "degraded"),  # gave up on some today, the rest goes through
        (0, 2, NOW - timedelta(days=2), None, "failing"),  # nothing through for a day
    ],
)
def test_level_follows_the_latest_signal(
    retrying: int, gave_up: int, success: datetime | None, failure: datetime | None, level: str
) -> None:
    health = Health(Count(retrying), Count(gave_up), success, NOW, last_failure_at=failure)
    assert health.level == level
