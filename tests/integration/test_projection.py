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


def test_contact_is_upserted_and_a_stale_or_repeated_update_changes_nothing(projection: Projection) -> None:
    assert projection.apply(payload(100, email="old@example.com"))
    assert projection.apply(payload(300, email="new@example.com"))
    assert not projection.apply(payload(200, email="stale@example.com"))
    assert not projection.apply(payload(300, email="again@example.com"))
    assert _rows(
        projection, t.contacts, "contact_id", "email", "email_transactionid", "last_transactionid"
    ) == [("42", "new@example.com", 300, 300)]


def test_field_values_follow_the_latest_update(projection: Projection) -> None:
    projection.apply(payload(1))
    changed = payload(2, extra={"fields": [{"id": 3, "name": "First Name", "value": "Janet"}]})
    projection.apply(changed)
    assert _rows(projection, t.field_values, "field_id", "name", "value") == [
        ("3", "First Name", "Janet"),
        ("4", "City", "Zürich & Co"),
    ]
    no_fields = SyncPayload.from_wire({"transactionid": "3", "contact": {"id": 42, "email": "j@example.com"}})
    projection.apply(no_fields)  # the section was not selected: values stay
    assert _rows(projection, t.field_values, "field_id", "value", "value_transactionid") == [
        ("3", "Janet", 2),
        ("4", "Zürich & Co", 1),  # not carried by the update of transactionid 2: left alone
    ]


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


def _contact(proj: Projection) -> list[tuple[Any, ...]]:
    return _rows(proj, t.contacts, "contact_id", "email", "phone", "profile_url", "lead_score", "lead_label")


def test_a_newer_partial_delivery_leaves_what_it_does_not_carry(projection: Projection) -> None:
    """Regression: a full POST (100) then a GET carrying one field (200) blanked phone, URL and fields."""
    projection.apply(
        payload(
            100,
            extra={
                "fields": [
                    {"id": 3, "name": "First Name", "value": "Jane"},
                    {"id": 4, "name": "City", "value": "Bern"},
                    {"id": 5, "name": "Plan", "value": "Pro"},
                ]
            },
        )
    )
    partial = SyncPayload.from_query(
        "transactionid=200&contact%5Bid%5D=42&fields%5B0%5D%5Bid%5D=4&fields%5B0%5D%5Bvalue%5D=Basel"
    )
    assert projection.apply(partial)
    assert _contact(projection) == [
        ("42", "jane@example.com", "+15551234567", "https://platform.example/contacts/42", "40", "Warm")
    ]
    assert _rows(
        projection, t.field_values, "field_id", "name", "value", "name_transactionid", "value_transactionid"
    ) == [
        ("3", "First Name", "Jane", 100, 100),
        ("4", "City", "Basel", 100, 200),
        ("5", "Plan", "Pro", 100, 100),
    ]


def test_present_and_empty_clears_and_absent_stays_null(projection: Projection) -> None:
    projection.apply(payload(100))
    cleared = SyncPayload.from_query("transactionid=200&contact%5Bid%5D=42&contact%5Bphone%5D=")
    projection.apply(cleared)
    assert _contact(projection)[0][2] == ""
    first = SyncPayload.from_query("transactionid=300&contact%5Bid%5D=7&contact%5Bemail%5D=x%40example.com")
    projection.apply(first)
    assert _rows(projection, t.contacts, "contact_id", "email", "phone", "phone_transactionid")[1] == (
        "7",
        "x@example.com",
        None,
        None,
    )


def test_a_late_older_delivery_still_adds_its_activity(projection: Projection) -> None:
    """Regression: a goal reached in 150, received after 200, never reached sync_goals_reached."""
    projection.apply(payload(100))
    projection.apply(payload(200, email="new@example.com"))
    late = payload(
        150,
        email="old@example.com",
        extra={"goals-reached": [{"id": 12, "name": "Signed up", "reach_date": "2026-03-05 09:00:00"}]},
    )
    assert projection.apply(late)
    assert _rows(projection, t.goals_reached, "goal_id", "first_transactionid") == [("11", 100), ("12", 150)]
    assert _contact(projection)[0][1] == "new@example.com"


def test_activity_text_and_first_transactionid_come_from_the_oldest_delivery(projection: Projection) -> None:
    def opened(tid: int, name: str) -> SyncPayload:
        return payload(tid, extra={"campaigns-opened": [{"id": 7, "name": name, "open_date": "2026-03-01"}]})

    projection.apply(opened(300, "Spring (renamed)"))
    projection.apply(opened(100, "Spring"))
    projection.apply(opened(200, "Spring v2"))
    assert _rows(projection, t.campaigns_opened, "name", "first_transactionid") == [("Spring", 100)]


def test_a_get_naming_no_contact_is_not_projected(projection: Projection) -> None:
    assert not projection.apply(SyncPayload.from_wire({"transactionid": "9", "contact": {}, "param1": "x"}))
    assert _rows(projection, t.contacts, "contact_id") == []
