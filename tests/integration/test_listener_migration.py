"""Listener migration 0002 carries a projection written under the old whole-payload rule over to the merge."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from contactsync.db import listener as t
from contactsync.db.engine import create_engine
from contactsync.db.migrate import upgrade
from contactsync.listener.projection import Projection
from contactsync.wire.payload import SyncPayload


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def url(request: pytest.FixtureRequest) -> str:
    fixture = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}[request.param]
    return str(request.getfixturevalue(fixture))


def test_stamps_are_back_filled_and_the_merge_goes_on_from_there(url: str) -> None:
    engine = create_engine(url)
    try:
        upgrade(engine, side="listener", revision="0001")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO sync_contacts (contact_id, email, phone, profile_url, lead_score,"
                    " lead_label, last_transactionid, version, updated_at_ms)"
                    " VALUES ('42', 'jane@example.com', '', NULL, '40', 'Warm', 500, 3, 1)"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO sync_field_values (contact_id, field_id, name, value)"
                    " VALUES ('42', '3', 'City', 'Bern')"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO listener_inbox (transactionid, received_at_ms, method, content_type, query,"
                    " headers, body, source_address) VALUES ('500', 1, 'POST', '', '', '{}', :body, '')"
                ),
                {"body": b"transactionid=500"},
            )
        upgrade(engine, side="listener")
        with engine.connect() as conn:
            contact = dict(conn.execute(sa.select(t.contacts)).one()._mapping)
            field = dict(conn.execute(sa.select(t.field_values)).one()._mapping)
            deduplicable = conn.execute(sa.select(t.inbox.c.deduplicable)).scalar_one()
        expected: dict[str, Any] = {
            "email": "jane@example.com",
            "email_transactionid": 500,
            "phone": "",
            "phone_transactionid": 500,
            "profile_url": None,
            "profile_url_transactionid": None,
            "lead_score_transactionid": 500,
            "lead_label_transactionid": 500,
            "last_transactionid": 500,
        }
        assert {k: contact[k] for k in expected} == expected
        assert "version" not in contact
        assert (field["name_transactionid"], field["value_transactionid"]) == (500, 500)
        assert deduplicable  # every entry stored before was keyed by its transactionid
    finally:
        engine.dispose()
    projection = Projection(url, clock_ms=lambda: 2)
    try:
        older = {
            "transactionid": "400",
            "contact": {"id": 42, "profile_url": "https://p/42", "email": "old@x"},
        }
        projection.apply(SyncPayload.from_wire(older))
        assert projection.state("42") is not None
        with projection.engine.connect() as conn:
            row = conn.execute(sa.select(t.contacts.c.email, t.contacts.c.profile_url)).one()
        assert tuple(row) == ("jane@example.com", "https://p/42")  # older: only what was never written
    finally:
        projection.close()
