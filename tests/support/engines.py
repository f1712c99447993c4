"""The ``engine`` fixture delivery tests share: a migrated platform database with account 1 and its action 1,
fresh per test, on each database ``db_url`` names. A module whose seeded rows need another creation time
overrides ``migrated_at``; a module that seeds differently defines its own ``engine``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa

from support.delivery import migrated


@pytest.fixture
def migrated_at() -> datetime:
    """When the seeded account and action were created."""
    return datetime(2026, 1, 1)


@pytest.fixture
def engine(db_url: str, migrated_at: datetime) -> Iterator[sa.Engine]:
    eng = migrated(db_url, now=migrated_at)
    yield eng
    eng.dispose()
