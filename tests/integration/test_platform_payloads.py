"""The payload builder's wire structure encodes exactly as the validated SyncPayload does.

The outbox path encodes :attr:`Rendered.wire` directly (no model objects); the model built from that
structure by the listener-side validator must give the same bytes, for every section, missing
numbers, non-ASCII text, both date formats and a time zone; and the transactionid spliced into a
body by the :class:`Freezer` must give the bytes of a payload built with that id.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from contactsync.automation import actions as act
from contactsync.automation import lists
from contactsync.automation.action_settings import SyncActionSettings, validate_settings
from contactsync.automation.freezing import Freezer, freeze_request
from contactsync.automation.payload_builder import PayloadOptions, build
from contactsync.db import create_engine
from contactsync.db import platform as t
from contactsync.db.migrate import upgrade
from contactsync.wire.payload import SECTIONS

T0 = datetime(2026, 5, 4, 10, 0, 0)
KINDS = ("campaign_open", "link_click", "page_visit", "automation", "goal", "webhook", "lead_score")


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    upgrade(db_url)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        account = lists.create_account(conn, name="acme", now=T0)
        lst = lists.create_list(conn, lists.ListIn(account_id=account, name="Clients & Co"), now=T0)
        first = lists.create_field(conn, lists.FieldIn(list_id=lst.id, name="Prénom"), now=T0)
        lists.create_field(conn, lists.FieldIn(list_id=lst.id, name="Age", type="number"), now=T0)
        conn.execute(
            t.contacts.insert(),
            [
                {
                    "id": i,
                    "list_id": lst.id,
                    "email": f"ç{i}@x.test",
                    "email_key": f"ç{i}@x.test",
                    "phone": "+33 6 12" if i % 2 else "",
                    "status": "subscribed",
                    "lead_score": 7 * i,
                    "created_at": T0,
                    "updated_at": T0,
                }
                for i in (1, 2, 3)
            ],
        )
        conn.execute(
            t.field_values.insert(),
            [{"contact_id": 1, "field_id": first.id, "value": 'Zoë "a&b" [x]=1', "value_num": None}],
        )
        conn.execute(
            t.activities.insert(),
            [
                {
                    "contact_id": cid,
                    "kind": kind,
                    "ref_id": None if n == 1 else 10 + n,
                    "name": f"nom {n} – ✓",
                    "url": f"https://s.test/p?q={n}&r=é",
                    "value": None if kind == "lead_score" and n == 2 else n,
                    "occurred_at": T0 - timedelta(hours=n),
                }
                for cid in (1, 2)
                for kind in KINDS
                for n in (1, 2, 3)
            ],
        )
    yield engine
    engine.dispose()


OPTIONS = [
    PayloadOptions(sections=SECTIONS),
    PayloadOptions(sections=("lead-score", "fields"), max_items=2),
    PayloadOptions(sections=SECTIONS, date_format="iso8601", time_zone="Europe/Paris", max_items=1),
    PayloadOptions(sections=()),
]


@pytest.mark.parametrize("options", OPTIONS)
def test_wire_encodes_as_the_validated_model(engine: sa.Engine, options: PayloadOptions) -> None:
    with engine.connect() as conn:
        rendered = build(conn, [1, 2, 3, 99], options=options, transactionids={1: 5, 2: 6, 3: 2**63 - 1})
    assert sorted(rendered) == [1, 2, 3]
    for cid, one in rendered.items():
        model = one.payload
        assert one.transactionid == model.transactionid
        assert one.to_form() == model.to_form()
        assert one.to_json() == model.to_json()
        assert list(one.wire) == ["transactionid", "contact", *(s for s in SECTIONS if s in options.sections)]
        assert one.wire == model.to_wire(json_types=True), cid


@pytest.mark.parametrize("content_type", ["form", "json"])
def test_spliced_transactionid_gives_the_bytes_of_a_fresh_build(engine: sa.Engine, content_type: str) -> None:
    settings = SyncActionSettings(url="https://h.test/?t=[#TRANSACTIONID#]", content_type=content_type)
    action = act.ActionOut(
        id=1,
        automation_id=1,
        settings=settings,
        secret="s",
        previous_secret_expires_at=None,
        endpoint="https://h.test:443",
        created_at=T0,
        updated_at=T0,
    )
    template = validate_settings(settings, [], country_code="1")
    freezer = Freezer(action, template, now=T0, account_id=1)
    options = PayloadOptions(sections=SECTIONS)
    with engine.connect() as conn:
        placeholder = build(conn, [1], options=options, transactionids={1: 1})[1]
        fresh = build(conn, [1], options=options, transactionids={1: 2**62 + 17})[1]
    spliced = freezer.request(placeholder, transactionid=2**62 + 17, automation_id=1, contact_id=1, now=T0)
    direct = freeze_request(action, template, fresh, automation_id=1, contact_id=1, now=T0, account_id=1)
    assert spliced == direct
    assert spliced.url == f"https://h.test/?t={2**62 + 17}"
