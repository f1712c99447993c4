"""``db.bulk.insert_rows``: COPY on PostgreSQL stores exactly what an ordinary INSERT stores."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.db import create_engine
from contactsync.db import platform as t
from contactsync.db.bulk import insert_rows
from contactsync.db.migrate import upgrade

T0 = datetime(2026, 6, 1, 8, 0, 0)
texts = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
headers = st.dictionaries(st.text(min_size=1, max_size=10), texts, max_size=3)
row = st.fixed_dictionaries(
    {
        "body": st.binary(max_size=200),
        "url": texts,
        "headers": headers,
        "contact_id": st.none() | st.integers(1, 2**62),
        "ordering_key": st.none() | texts.map(lambda s: s[:100]),
        "next_attempt_at": st.datetimes(min_value=T0, max_value=T0 + timedelta(days=999)),
    }
)


@pytest.fixture
def engine(db_url: str) -> Any:
    upgrade(db_url)
    eng = create_engine(db_url)
    with eng.begin() as conn:
        conn.execute(t.accounts.insert().values(id=1, name="a", created_at=T0))
    yield eng
    eng.dispose()


def _delivery(i: int, r: dict[str, Any]) -> dict[str, Any]:
    return {
        "transactionid": i,
        "account_id": 1,
        "endpoint": "https://h.test",
        "method": "POST",
        "state": "pending",
        "attempt_count": 0,
        "created_at": T0,
        "updated_at": T0,
        **r,
    }


@settings(max_examples=15, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=8))
def test_copy_and_insert_store_the_same_rows(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    d = t.deliveries.c
    columns = [d.body, d.url, d.headers, d.contact_id, d.ordering_key, d.next_attempt_at, d.content_type]
    with engine.connect() as conn:
        with conn.begin():
            conn.execute(t.deliveries.delete())
            insert_rows(conn, t.deliveries, [_delivery(i, r) for i, r in enumerate(rows, 1)])
            conn.execute(t.deliveries.insert(), [_delivery(-i, r) for i, r in enumerate(rows, 1)])
        copied = conn.execute(sa.select(*columns).where(d.transactionid > 0).order_by(d.transactionid)).all()
        inserted = conn.execute(
            sa.select(*columns).where(d.transactionid < 0).order_by(d.transactionid.desc())
        ).all()
    assert copied == inserted
    # a column left out gets the table's default ("" for content_type), as with an INSERT
    assert {r.content_type for r in copied} == {""}


def test_a_duplicate_key_aborts_as_an_insert_would(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        with conn.begin():
            conn.execute(t.deliveries.delete())
        with pytest.raises(sa.exc.IntegrityError), conn.begin():
            insert_rows(
                conn,
                t.deliveries,
                [_delivery(7, {"body": b"", "url": "", "headers": {}, "next_attempt_at": T0})] * 2,
            )
        assert conn.execute(sa.select(sa.func.count()).select_from(t.deliveries)).scalar_one() == 0
