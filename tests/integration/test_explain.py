"""Explain, dry run and resend on purpose, through the real API on SQLite and PostgreSQL.

Explain answers "why did (or would) this contact sync" with every condition, the contact's value and
the result, the re-entry gate and the deliveries; the dry run counts what a manual run would do
without doing it; a resend ignores re-entry on purpose and is audited as such.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from contactsync.db import platform as t
from support.api import Api, api_client
from support.listener import wait_for


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with api_client(db_url) as client:
        yield client


def _setup(api: Api) -> dict[str, Any]:
    lst = api.ok("POST", "/api/lists", 201, json={"name": "Customers"})
    city = api.ok("POST", f"/api/lists/{lst['id']}/fields", 201, json={"name": "City"})
    conditions = {
        "type": "group",
        "op": "and",
        "conditions": [
            {"type": "field", "subject": f"field:{city['id']}", "op": "eq", "value": "Paris"},
            {
                "type": "activity",
                "kind": "page_visit",
                "url_op": "contains",
                "url": "/pricing",
                "min_count": 2,
                "within_days": 7,
            },
        ],
    }
    automation = api.ok(
        "POST",
        "/api/automations",
        201,
        json={
            "list_id": lst["id"],
            "name": "Pricing fans",
            "trigger": {"event": "manual"},
            "conditions": conditions,
            "reentry": {"policy": "once"},
        },
    )
    api.ok(
        "POST", f"/api/automations/{automation['id']}/actions", 201, json={"url": "http://127.0.0.1:9/hook"}
    )
    people = {}
    for email, town, visits in (
        ("ann@example.com", "Paris", 2),
        ("bob@example.com", "Lyon", 3),
        ("cat@example.com", "Paris", 1),
    ):
        made = api.ok(
            "POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": email, "fields": {"City": town}}
        )
        cid = made["contact"]["id"]
        people[email] = cid
        events = [{"kind": "page.visited", "contact_id": cid, "url": "https://shop.test/pricing"}] * visits
        events.append({"kind": "page.visited", "contact_id": cid, "url": "https://shop.test/blog"})
        api.ok("POST", "/api/events", 202, json={"events": events})
    return {"automation": automation["id"], "people": people}


def _run(api: Api, automation_id: int, **body: Any) -> dict[str, Any]:
    run = api.ok("POST", f"/api/automations/{automation_id}/runs", 202, json=body or None)

    def done() -> bool:
        return bool(api.ok("GET", f"/api/runs/{run['id']}")["state"] == "completed")

    wait_for(done)
    return dict(api.ok("GET", f"/api/runs/{run['id']}"))


def test_explain_shows_every_condition_with_the_contacts_value(api: Api) -> None:
    world = _setup(api)
    a = world["automation"]
    ann = api.ok(
        "GET", f"/api/automations/{a}/explain", params={"contact_id": world["people"]["ann@example.com"]}
    )
    assert ann["matches"]
    assert ann["would_enter"]
    assert ann["gate"]["open"]
    assert [(s["kind"], s["result"]) for s in ann["steps"]] == [
        ("group", True),
        ("field", True),
        ("activity", True),
    ]
    assert ann["steps"][1]["actual"] == "Paris"
    assert ann["steps"][1]["test"] == "City eq 'Paris'"
    assert ann["steps"][2]["actual"] == "2 matching"  # the /blog visit does not count
    assert "manual run" in ann["verdict"]

    bob = api.ok(
        "GET", f"/api/automations/{a}/explain", params={"contact_id": world["people"]["bob@example.com"]}
    )
    assert not bob["matches"]
    assert not bob["would_enter"]
    assert bob["steps"][1] == {**bob["steps"][1], "actual": "Lyon", "result": False}
    assert "City eq 'Paris'" in bob["verdict"]
    assert "Lyon" in bob["verdict"]

    cat = api.ok(
        "GET", f"/api/automations/{a}/explain", params={"contact_id": world["people"]["cat@example.com"]}
    )
    assert cat["steps"][2]["actual"] == "1 matching"
    assert not cat["steps"][2]["result"]

    # after a run, the `once` gate is what blocks ann, and her delivery is listed
    _run(api, a)
    again = api.ok(
        "GET", f"/api/automations/{a}/explain", params={"contact_id": world["people"]["ann@example.com"]}
    )
    assert again["matches"]
    assert not again["gate"]["open"]
    assert not again["would_enter"]
    assert again["gate"]["last_entered_at"] is not None
    assert "re-entry blocks it" in again["verdict"]
    assert [d["state"] for d in again["deliveries"]] == ["pending"]

    # a paused automation says so first
    got = api.ok("GET", f"/api/automations/{a}")
    body = {k: got[k] for k in ("list_id", "name", "trigger", "conditions", "reentry")} | {"status": "paused"}
    api.ok("PUT", f"/api/automations/{a}", json=body)
    paused = api.ok(
        "GET", f"/api/automations/{a}/explain", params={"contact_id": world["people"]["ann@example.com"]}
    )
    assert not paused["active"]
    assert not paused["would_enter"]
    assert "paused" in paused["verdict"]


def test_dry_run_counts_and_resend_ignores_reentry_on_purpose(api: Api) -> None:
    world = _setup(api)
    a = world["automation"]
    first = api.ok("GET", f"/api/automations/{a}/dry-run")
    assert (first["total"], first["matching"], first["would_enter"]) == (3, 1, 1)
    assert first["sample"] == [world["people"]["ann@example.com"]]
    assert api.count(t.deliveries) == 0  # a dry run sends nothing

    run = _run(api, a)
    assert run["enqueued"] == 1
    assert not run["ignore_reentry"]
    after = api.ok("GET", f"/api/automations/{a}/dry-run")
    assert (after["matching"], after["would_enter"], after["sample"]) == (1, 0, [])
    forced = api.ok("GET", f"/api/automations/{a}/dry-run", params={"ignore_reentry": "true"})
    assert (forced["would_enter"], forced["ignore_reentry"]) == (1, True)

    assert _run(api, a)["enqueued"] == 0  # an ordinary run respects `once`
    resend = _run(api, a, ignore_reentry=True)
    assert resend["enqueued"] == 1
    assert resend["ignore_reentry"]
    ann = world["people"]["ann@example.com"]
    assert api.count(t.deliveries, t.deliveries.c.contact_id == ann) == 2
    assert _run(api, a)["enqueued"] == 0  # and `once` holds again afterwards

    with api.engine.connect() as conn:
        actions = conn.execute(
            sa.select(t.audit_log.c.action)
            .where(t.audit_log.c.action.like("run.%"))
            .order_by(t.audit_log.c.id)
        ).scalars()
        assert list(actions) == ["run.start", "run.start", "run.resend", "run.start"]


def test_explain_refuses_contacts_outside_the_automation(api: Api) -> None:
    world = _setup(api)
    other = api.ok("POST", "/api/lists", 201, json={"name": "Other"})
    stranger = api.ok("POST", f"/api/lists/{other['id']}/contacts", 201, json={"email": "x@example.com"})
    answer = api.get(
        f"/api/automations/{world['automation']}/explain", params={"contact_id": stranger["contact"]["id"]}
    )
    assert answer.status_code == 404
    assert answer.json()["field"] == "contact_id"
    missing = api.get(f"/api/automations/{world['automation']}/explain", params={"contact_id": 10**12})
    assert missing.status_code == 404


def test_the_verdict_blames_the_condition_that_decides(api: Api) -> None:
    """A failed leaf an OR group makes up for is not the reason; the failing AND branch is."""
    lst = api.ok("POST", "/api/lists", 201, json={"name": "L"})
    city = api.ok("POST", f"/api/lists/{lst['id']}/fields", 201, json={"name": "City"})
    plan = api.ok("POST", f"/api/lists/{lst['id']}/fields", 201, json={"name": "Plan"})
    either = [
        {"type": "field", "subject": f"field:{city['id']}", "op": "eq", "value": town}
        for town in ("Lyon", "Paris")
    ]
    conditions = {
        "type": "group",
        "op": "and",
        "conditions": [
            {"type": "group", "op": "or", "conditions": either},
            {"type": "field", "subject": f"field:{plan['id']}", "op": "eq", "value": "pro"},
        ],
    }
    automation = api.ok(
        "POST",
        "/api/automations",
        201,
        json={"list_id": lst["id"], "name": "Pro", "trigger": {"event": "manual"}, "conditions": conditions},
    )
    made = api.ok(
        "POST",
        f"/api/lists/{lst['id']}/contacts",
        201,
        json={"email": "z@example.com", "fields": {"City": "Paris", "Plan": "free"}},
    )
    got = api.ok(
        "GET", f"/api/automations/{automation['id']}/explain", params={"contact_id": made["contact"]["id"]}
    )
    assert "Plan eq 'pro'" in got["verdict"]
    assert "Lyon" not in got["verdict"]
