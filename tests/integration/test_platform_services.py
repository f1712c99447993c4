"""Platform services on SQLite and PostgreSQL: contacts, typed fields, activity, actions, the event path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from contactsync.automation import actions as act
from contactsync.automation import activity, automations, contacts, events, lists, preview
from contactsync.automation.action_settings import SyncActionSettings
from contactsync.automation.rules import Group, Reentry, TriggerSpec
from contactsync.automation.runtime import Runtime
from contactsync.db import create_engine
from contactsync.db import platform as t
from contactsync.db.migrate import upgrade
from contactsync.errors import NotFoundError, ValidationError
from contactsync.wire.transactionid import TransactionIdGenerator
from support import run_php

T0 = datetime(2026, 5, 4, 10, 0, 0)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def ms(self) -> int:
        return int((self.now - datetime(1970, 1, 1)).total_seconds() * 1000)


@dataclass
class World:
    engine: sa.Engine
    rt: Runtime
    clock: Clock
    list_id: int
    f: dict[str, int]

    def count(self, table: sa.Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    upgrade(db_url)
    engine = create_engine(db_url)
    clock = Clock()
    rt = Runtime(
        clock=clock, ids=TransactionIdGenerator(clock_ms=clock.ms), public_base_url="https://app.test"
    )
    with engine.begin() as conn:
        account = lists.create_account(conn, name="acme", now=T0)
        lst = lists.create_list(conn, lists.ListIn(account_id=account, name="Customers"), now=T0)
        f = {}
        for name, kind, choices in [
            ("First Name", "text", []),
            ("Age", "number", []),
            ("Birthday", "date", []),
            ("Plan", "choice", ["free", "pro"]),
            ("Work email", "email", []),
            ("Mobile", "phone", []),
        ]:
            fld = lists.create_field(
                conn, lists.FieldIn(list_id=lst.id, name=name, type=kind, choices=choices), now=T0
            )
            f[name] = fld.id
    yield World(engine, rt, clock, lst.id, f)
    engine.dispose()


def _contact(w: World, email: str, **fields: str | int | float | None) -> contacts.UpsertResult:
    with w.engine.begin() as conn:
        result, _ = events.save_contact(
            conn, w.rt, contacts.ContactIn(list_id=w.list_id, email=email, fields=fields)
        )
    return result


def test_upsert_by_email_is_case_insensitive_and_reports_changes(world: World) -> None:
    first = _contact(world, "Jane@Example.com", FIRST_NAME="Jane", Age=41)
    assert first.created
    again = _contact(world, "jane@example.COM", AGE="42")
    assert not again.created
    assert again.contact.id == first.contact.id
    assert again.changed_fields == [world.f["Age"]]
    assert {v.name: v.value for v in again.contact.fields} == {"First Name": "Jane", "Age": "42"}
    same = _contact(world, "jane@example.COM", FIRST_NAME="Jane")
    assert (same.changed, same.changed_fields) == (False, [])
    assert world.count(t.contacts) == 1


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"Age": "forty"}, "fields.Age"),
        ({"Age": True}, "fields.Age"),
        ({"BIRTHDAY": "31/12/2020"}, "fields.BIRTHDAY"),
        ({"plan": "gold"}, "fields.plan"),
        ({"WORK_EMAIL": "nope"}, "fields.WORK_EMAIL"),
        ({"MOBILE": "call me"}, "fields.MOBILE"),
        ({"FIRST_NAME": 3}, "fields.FIRST_NAME"),
        ({"NO_SUCH": "x"}, "fields.NO_SUCH"),
    ],
)
def test_typed_fields_reject_bad_values_and_write_nothing(
    world: World, fields: dict[str, str | int | float | None], where: str
) -> None:
    with pytest.raises(ValidationError) as info:
        _contact(world, "a@b.co", PLAN="pro", **fields)
    assert info.value.field == where
    assert world.count(t.contacts) == 0
    assert world.count(t.field_values) == 0


def test_values_are_stored_canonically(world: World) -> None:
    got = _contact(
        world, "a@b.co", AGE=7.0, BIRTHDAY="2020-02-03T04:05:06+02:00", PLAN="pro", MOBILE="+1 555 0100"
    )
    values = {v.name: v.value for v in got.contact.fields}
    assert values == {"Age": "7", "Birthday": "2020-02-03 02:05:06", "Plan": "pro", "Mobile": "+1 555 0100"}


def test_unknown_list_and_bad_email_name_the_field(world: World) -> None:
    with pytest.raises(NotFoundError) as info, world.engine.begin() as conn:
        contacts.upsert_contact(conn, contacts.ContactIn(list_id=999, email="a@b.co"), now=T0)
    assert info.value.field == "list_id"
    with pytest.raises(ValidationError) as invalid, world.engine.begin() as conn:
        contacts.upsert_contact(conn, contacts.ContactIn(list_id=world.list_id, email="not-an-email"), now=T0)
    assert invalid.value.field == "email"


def _ingest(w: World, *evs: dict[str, object]) -> events.FireResult:
    from pydantic import TypeAdapter

    batch = TypeAdapter(list[activity.Event]).validate_python(list(evs))
    with w.engine.begin() as conn:
        return events.ingest_events(conn, w.rt, batch)


def test_lead_status_follows_thresholds_and_bad_batches_write_nothing(world: World) -> None:
    cid = _contact(world, "a@b.co").contact.id
    _ingest(
        world, {"kind": "lead_score.changed", "contact_id": cid, "score_id": 1, "name": "visit", "value": 25}
    )
    with world.engine.connect() as conn:
        assert contacts.get_contact(conn, cid).lead_status == "Warm"
    with pytest.raises(NotFoundError) as info:
        _ingest(
            world,
            {"kind": "lead_score.changed", "contact_id": cid, "score_id": 1, "value": 30},
            {"kind": "page.visited", "list_id": world.list_id, "email": "ghost@b.co", "url": "https://x"},
        )
    assert info.value.field == "events[1].email"
    assert world.count(t.activities) == 1
    with world.engine.begin() as conn:
        account = conn.execute(sa.select(t.lists.c.account_id)).scalar_one()
        lists.set_thresholds(
            conn,
            account,
            [lists.Threshold(min_score=0, label="Ice"), lists.Threshold(min_score=10, label="Lava")],
        )
        assert contacts.get_contact(conn, cid).lead_status == "Lava"


def _automation(
    w: World,
    *,
    trigger: str = "campaign.opened",
    reentry: Reentry | None = None,
    conditions: dict[str, object] | None = None,
    **settings: object,
) -> tuple[int, int]:
    with w.engine.begin() as conn:
        auto = automations.create_automation(
            conn,
            w.rt,
            automations.AutomationIn(
                list_id=w.list_id,
                name="Welcome",
                trigger=TriggerSpec(event=trigger),
                conditions=Group.model_validate(conditions) if conditions else None,
                reentry=reentry or Reentry(),
            ),
        )
        s = SyncActionSettings.model_validate(
            {"url": "https://hooks.test/in?who=[#LOWER EMAIL#]", **settings}
        )
        action = act.create_action(conn, w.rt, automation_id=auto.id, settings=s)
    return auto.id, action.id


def _deliveries(w: World) -> list[sa.Row[Any]]:
    with w.engine.connect() as conn:
        return list(conn.execute(sa.select(t.deliveries).order_by(t.deliveries.c.id)))


def test_event_writes_one_outbox_row_that_php_decodes(world: World, php: str) -> None:
    cid = _contact(world, "Jane@Example.com", FIRST_NAME="Jane", AGE=41).contact.id
    _automation(
        world,
        conditions={
            "op": "and",
            "conditions": [{"type": "field", "subject": f"field:{world.f['Age']}", "op": "gte", "value": 18}],
        },
        sections=["fields", "campaigns-opened", "lead-status"],
    )
    world.clock.now = T0 + timedelta(minutes=5)
    fired = _ingest(
        world, {"kind": "campaign.opened", "contact_id": cid, "campaign_id": 7, "campaign_name": "May"}
    )
    rows = _deliveries(world)
    assert len(rows) == 1
    assert fired.transactionids == [rows[0].transactionid]
    row = rows[0]
    assert (row.method, row.url, row.endpoint) == (
        "POST",
        "https://hooks.test/in?who=jane%40example.com",
        "https://hooks.test:443",
    )
    assert row.content_type == "application/x-www-form-urlencoded"
    decoded = json.loads(
        run_php(php, "parse_str(file_get_contents('php://stdin'), $a); echo json_encode($a);", row.body)
    )
    assert decoded == {
        "transactionid": str(row.transactionid),
        "contact": {
            "id": str(cid),
            "email": "Jane@Example.com",
            "phone": "",
            "profile_url": f"https://app.test/contacts/{cid}",
        },
        "fields": [
            {"id": str(world.f[n]), "name": n, "value": v}
            for n, v in [
                ("First Name", "Jane"),
                ("Age", "41"),
                ("Birthday", ""),
                ("Plan", ""),
                ("Work email", ""),
                ("Mobile", ""),
            ]
        ],
        "campaigns-opened": [{"id": "7", "name": "May", "open_date": "2026-05-04 10:05:00"}],
        "lead-status": {"score": "0", "label": "Cold"},
    }
    # once (default): the contact does not enter again
    _ingest(world, {"kind": "campaign.opened", "contact_id": cid, "campaign_id": 8})
    assert len(_deliveries(world)) == 1


def test_conditions_that_fail_enqueue_nothing(world: World) -> None:
    cid = _contact(world, "kid@b.co", AGE=9).contact.id
    _automation(
        world,
        conditions={
            "conditions": [{"type": "field", "subject": f"field:{world.f['Age']}", "op": "gte", "value": 18}]
        },
    )
    _ingest(world, {"kind": "campaign.opened", "contact_id": cid, "campaign_id": 1})
    assert _deliveries(world) == []


def test_reentry_always_and_per_hours(world: World) -> None:
    cid = _contact(world, "a@b.co").contact.id
    _automation(world, trigger="page.visited", reentry=Reentry(policy="always"))
    _automation(world, trigger="page.visited", reentry=Reentry(policy="per_hours", hours=2))
    visit = {"kind": "page.visited", "contact_id": cid, "url": "https://site.test/p"}
    _ingest(world, visit)
    _ingest(world, visit)
    assert len(_deliveries(world)) == 3  # always twice, per_hours once
    world.clock.now = T0 + timedelta(hours=2, seconds=1)
    _ingest(world, visit)
    assert len(_deliveries(world)) == 5


def test_per_hours_admits_again_exactly_n_hours_after_the_last_entry(world: World) -> None:
    cid = _contact(world, "a@b.co").contact.id
    _automation(world, trigger="page.visited", reentry=Reentry(policy="per_hours", hours=2))
    visit = {"kind": "page.visited", "contact_id": cid, "url": "https://site.test/p"}
    _ingest(world, visit)
    world.clock.now = T0 + timedelta(hours=2) - timedelta(microseconds=1)
    _ingest(world, visit)
    assert len(_deliveries(world)) == 1  # within the last 2 hours
    world.clock.now = T0 + timedelta(hours=2)
    _ingest(world, visit)
    assert len(_deliveries(world)) == 2  # 2 hours on: not within them any more
    world.clock.now = T0 + timedelta(hours=3)
    _ingest(world, visit)
    assert len(_deliveries(world)) == 2  # counted from the latest entry


def test_a_changed_policy_counts_the_entries_made_under_the_old_one(world: World) -> None:
    cid = _contact(world, "a@b.co").contact.id
    aid, _ = _automation(world, trigger="page.visited", reentry=Reentry(policy="always"))
    visit = {"kind": "page.visited", "contact_id": cid, "url": "https://site.test/p"}
    _ingest(world, visit)
    world.clock.now = T0 + timedelta(hours=1)
    _ingest(world, visit)
    with world.engine.begin() as conn:
        current = automations.get_automation(conn, aid)
        fields = current.model_dump(include=set(automations.AutomationIn.model_fields))
        data = automations.AutomationIn.model_validate(
            {**fields, "reentry": {"policy": "per_hours", "hours": 2}}
        )
        automations.update_automation(conn, world.rt, aid, data)
    world.clock.now = T0 + timedelta(hours=2)
    _ingest(world, visit)  # the `always` entry an hour ago is recent
    assert len(_deliveries(world)) == 2
    world.clock.now = T0 + timedelta(hours=3)
    _ingest(world, visit)
    assert len(_deliveries(world)) == 3


def test_contact_updated_trigger_narrowed_to_fields(world: World) -> None:
    with world.engine.begin() as conn:
        auto = automations.create_automation(
            conn,
            world.rt,
            automations.AutomationIn(
                list_id=world.list_id,
                name="plan change",
                trigger=TriggerSpec(event="contact.updated", fields=[world.f["Plan"]]),
                reentry=Reentry(policy="always"),
            ),
        )
        act.create_action(
            conn,
            world.rt,
            automation_id=auto.id,
            settings=SyncActionSettings(url="https://h.test/", method="GET"),
        )
    _contact(world, "a@b.co", PLAN="free")
    _contact(world, "a@b.co", FIRST_NAME="A")
    assert _deliveries(world) == []
    _contact(world, "a@b.co", PLAN="pro")
    rows = _deliveries(world)
    assert [(r.method, r.body, r.content_type) for r in rows] == [("GET", b"", "")]


@pytest.mark.parametrize(
    ("settings", "where", "needle"),
    [
        ({"url": "ftp://x.test/"}, "url", "http"),
        ({"url": "https://x.test/?a=[#NO_SUCH_FIELD#]"}, "url", "line 1, column"),
        ({"url": "https://x.test/?a=[#FIRST_NAM#]"}, "url", "FIRST_NAME"),
        ({"url": "https://x.test/", "sections": ["fields", "bogus"]}, "sections", "bogus"),
        ({"url": "https://x.test/", "method": "GET", "content_type": "json"}, "content_type", "POST"),
        (
            {"url": "https://x.test/", "headers": [{"name": "Bad Name", "value": "x"}]},
            "headers[0].name",
            "header",
        ),
        (
            {"url": "https://x.test/", "headers": [{"name": "X-Key", "value": "a\r\nb"}]},
            "headers[0].value",
            "CR",
        ),
        (
            {"url": "https://x.test/", "headers": [{"name": "webhook-id", "value": "1"}]},
            "headers[0].name",
            "dispatcher",
        ),
        ({"url": "https://x.test/", "time_zone": "Mars/Base"}, "time_zone", "Mars"),
    ],
)
def test_action_validation_names_the_field(
    world: World, settings: dict[str, object], where: str, needle: str
) -> None:
    auto_id, _ = _automation(world)
    before = world.count(t.actions)
    with pytest.raises(ValidationError) as info, world.engine.begin() as conn:
        act.create_action(
            conn, world.rt, automation_id=auto_id, settings=SyncActionSettings.model_validate(settings)
        )
    assert info.value.field == where
    assert needle in str(info.value)
    assert world.count(t.actions) == before


def test_preview_rotation_and_capacity_warnings(world: World, php: str) -> None:
    cid = _contact(world, "a@b.co", FIRST_NAME="Ann").contact.id
    _, action_id = _automation(world, headers=[{"name": "X-Api-Key", "value": "k1"}])
    with world.engine.begin() as conn:
        before = act.get_action(conn, action_id)
        assert world.rt.keyring.open(before.secret).startswith("whsec_")  # sealed at rest
        assert before.warnings  # 100 items per full section exceed 1000 PHP variables
        shown = preview.preview(conn, world.rt, action_id, cid)
        rotated = act.rotate_secret(conn, world.rt, action_id)
        two = preview.preview(conn, world.rt, action_id, cid, reveal=True)  # as a test send signs
    assert shown.method == "POST"
    assert shown.headers["X-Api-Key"] == "••••••••"  # a credential: masked unless revealed
    assert shown.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert shown.headers["webhook-signature"] == preview.UNSIGNED  # only a test send signs
    assert two.headers["webhook-signature"].count("v1,") == 2  # the new secret and the previous one
    assert rotated.secret != before.secret
    assert rotated.previous_secret_expires_at == T0 + timedelta(hours=24)
    assert shown.size_bytes == len(shown.body)
    assert shown.php_variables == len(shown.body.split("&"))
    assert shown.warnings == []
    decoded = json.loads(
        run_php(
            php, "parse_str(file_get_contents('php://stdin'), $a); echo json_encode($a);", shown.body.encode()
        )
    )
    assert decoded["contact"]["email"] == "a@b.co"
    assert _deliveries(world) == []  # preview writes nothing
    with world.engine.begin() as conn:
        conn.execute(
            t.activities.insert(),
            [
                {
                    "contact_id": cid,
                    "kind": "page_visit",
                    "url": f"https://s.test/{i}",
                    "name": "",
                    "occurred_at": T0,
                }
                for i in range(600)
            ],
        )
        big = preview.preview(
            conn,
            world.rt,
            action_id,
            cid,
            settings=SyncActionSettings(url="https://hooks.test/", max_items=600),
        )
        small = preview.preview(
            conn,
            world.rt,
            action_id,
            cid,
            settings=SyncActionSettings(url="https://hooks.test/", content_type="json"),
        )
    assert big.php_variables > 1000
    assert any("max_input_vars" in w for w in big.warnings)
    assert small.headers["Content-Type"] == "application/json; charset=utf-8"
    assert len(json.loads(small.body)["pages-visited"]) == 100
    assert json.loads(small.body)["pages-visited"][0]["page"] == "https://s.test/599"


def test_get_url_over_8kb_warns(world: World) -> None:
    cid = _contact(world, "a@b.co", FIRST_NAME="x" * 9000).contact.id
    _, action_id = _automation(world, url="https://hooks.test/?n=[#FIRST_NAME#]", method="GET")
    with world.engine.begin() as conn:
        shown = preview.preview(conn, world.rt, action_id, cid)
    assert shown.body == ""
    assert shown.url_bytes > 8192
    assert any("8192" in w or "8,192" in w for w in shown.warnings)


def test_automation_validation(world: World) -> None:
    bad = [
        (
            {"conditions": [{"type": "field", "subject": "field:999", "op": "eq", "value": "x"}]},
            "conditions.conditions[0].subject",
        ),
        (
            {
                "conditions": [
                    {"type": "field", "subject": f"field:{world.f['Age']}", "op": "contains", "value": "1"}
                ]
            },
            "conditions.conditions[0].op",
        ),
        (
            {
                "conditions": [
                    {
                        "type": "group",
                        "conditions": [
                            {
                                "type": "field",
                                "subject": f"field:{world.f['Age']}",
                                "op": "gt",
                                "value": "old",
                            }
                        ],
                    }
                ]
            },
            "conditions.conditions[0].conditions[0].value",
        ),
        (
            {
                "conditions": [
                    {
                        "type": "field",
                        "subject": f"field:{world.f['Birthday']}",
                        "op": "gt",
                        "value": "2020-13-01",
                    }
                ]
            },
            "conditions.conditions[0].value",
        ),
    ]
    for conditions, where in bad:
        with pytest.raises(ValidationError) as info, world.engine.begin() as conn:
            automations.create_automation(
                conn,
                world.rt,
                automations.AutomationIn(
                    list_id=world.list_id,
                    name="x",
                    trigger=TriggerSpec(event="manual"),
                    conditions=Group.model_validate(conditions),
                ),
            )
        assert info.value.field == where
    assert world.count(t.automations) == 0
