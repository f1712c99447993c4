"""The SQL projection on SQLite, PostgreSQL and MariaDB: upserts, stale updates, activity de-duplication."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from contactsync.db import listener as t
from contactsync.errors import PayloadError
from contactsync.listener.projection import Projection
from contactsync.wire.payload import SyncPayload
from support.listener import payload


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def projection(request: pytest.FixtureRequest) -> Iterator[Projection]:
    fixture = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}[request.param]
    url = str(request.getfixturevalue(fixture))
    proj = Projection(url, clock_ms=lambda: 1_700_000_000_000)
    try:
        yield proj
    finally:
        proj.close()


def _rows(proj: Projection, table: sa.Table, *columns: str) -> list[tuple[Any, ...]]:
    with proj.engine.connect() as conn:
        rows = conn.execute(sa.select(*(table.c[c] for c in columns))).all()
    return sorted(tuple(r) for r in rows)


def test_contact_is_upserted_and_a_stale_or_repeated_update_is_ignored(projection: Projection) -> None:
    assert projection.apply(payload(100, email="old@example.com"))
    assert projection.apply(payload(300, email="new@example.com"))
    assert not projection.apply(payload(200, email="stale@example.com"))
    assert not projection.apply(payload(300, email="again@example.com"))
    assert _rows(projection, t.contacts, "contact_id", "email", "last_transactionid", "version") == [
        ("42", "new@example.com", 300, 2)
    ]


def test_field_values_follow_the_latest_update(projection: Projection) -> None:
    projection.apply(payload(1))
    changed = payload(2, extra={"fields": [{"id": 3, "name": "First Name", "value": "Janet"}]})
    projection.apply(changed)
    assert _rows(projection, t.field_values, "field_id", "name", "value") == [("3", "First Name", "Janet")]
    no_fields = SyncPayload.from_wire({"transactionid": "3", "contact": {"id": 42, "email": "j@example.com"}})
    projection.apply(no_fields)  # the section was not selected: values stay
    assert _rows(projection, t.field_values, "value") == [("Janet",)]


def test_activities_are_deduplicated_on_their_natural_key(projection: Projection) -> None:
    projection.apply(payload(1, clicks=3))
    projection.apply(payload(2, clicks=5))
    projection.apply(
        payload(
            3,
            clicks=4,
            extra={
                "campaigns-opened": [
                    {"id": 7, "name": "Spring", "open_date": "2026-03-01 10:00:00"},
                    {"id": 7, "name": "Spring", "open_date": "2026-04-01 10:00:00"},
                    {"id": 7, "name": "Spring", "open_date": "2026-04-01 10:00:00"},
                ]
            },
        )
    )
    assert _rows(projection, t.links_clicked, "url", "clicks", "first_transactionid") == [
        ("https://example.com/a?b=c&d[]=1", 5, 1)
    ]
    assert _rows(projection, t.campaigns_opened, "campaign_id", "open_date") == [
        ("7", "2026-03-01 10:00:00"),
        ("7", "2026-04-01 10:00:00"),
    ]
    for table in (
        t.pages_visited,
        t.automations_triggered,
        t.goals_reached,
        t.webhooks_triggered,
        t.lead_scores,
    ):
        assert len(_rows(projection, table, "contact_id")) == 1, table.name


def test_contacts_are_kept_apart(projection: Projection) -> None:
    for n in range(5):
        projection.apply(payload(10 + n, contact_id=n + 1, email=f"c{n}@example.com"))
    assert [r[0] for r in _rows(projection, t.contacts, "contact_id")] == ["1", "2", "3", "4", "5"]
    assert len(_rows(projection, t.links_clicked, "id")) == 5


def test_long_urls_and_unicode_survive(projection: Projection) -> None:
    url = "https://example.com/" + "ü" * 3000
    projection.apply(payload(1, extra={"links-clicked": [{"url": url, "clicks": 1}]}))
    assert _rows(projection, t.links_clicked, "url") == [(url,)]


def test_a_contact_without_id_cannot_be_projected(projection: Projection) -> None:
    with pytest.raises(PayloadError) as caught:
        projection.apply(SyncPayload.from_wire({"transactionid": "5", "contact": {"email": "x@example.com"}}))
    assert caught.value.path == "contact.id"


def test_a_batch_isolates_its_bad_payload(projection: Projection) -> None:
    bad = SyncPayload.from_wire({"transactionid": "7", "contact": {"email": "x@example.com"}})
    errors = projection.handle_batch([payload(5, contact_id=1), bad, payload(6, contact_id=2)])
    assert errors[0] is None
    assert isinstance(errors[1], PayloadError)
    assert errors[2] is None
    assert [r[0] for r in _rows(projection, t.contacts, "contact_id")] == ["1", "2"]
