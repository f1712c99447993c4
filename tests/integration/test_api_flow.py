"""Automations through the API on SQLite and PostgreSQL: preview, manual runs with progress, deliveries
(filters, pagination, detail, cancel, retry, recover since T) and secret rotation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from contactsync.api import create_app
from contactsync.automation import manual
from contactsync.automation.runtime import Runtime
from contactsync.db import platform as t
from contactsync.settings import Settings
from support.api import Api, api_client, new_account
from support.listener import serve


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with api_client(db_url, public_base_url="https://app.test") as client:
        yield client


def _world(api: Api, *, contacts: int) -> dict[str, Any]:
    lst = api.ok("POST", "/api/lists", 201, json={"name": "L"})
    plan = api.ok(
        "POST",
        f"/api/lists/{lst['id']}/fields",
        201,
        json={"name": "Plan", "type": "choice", "choices": ["free", "pro"]},
    )
    rows = "".join(f"c{i}@example.com,{'pro' if i % 2 else 'free'}\n" for i in range(contacts))
    api.ok(
        "POST",
        f"/api/lists/{lst['id']}/contacts/import",
        content=("email,PLAN\n" + rows).encode(),
        headers={"Content-Type": "text/csv"},
    )
    automation = api.ok(
        "POST",
        "/api/automations",
        201,
        json={
            "list_id": lst["id"],
            "name": "Pro users",
            "trigger": {"event": "manual"},
            "conditions": {
                "conditions": [
                    {"type": "field", "subject": f"field:{plan['id']}", "op": "eq", "value": "pro"}
                ]
            },
        },
    )
    action = api.ok(
        "POST",
        f"/api/automations/{automation['id']}/actions",
        201,
        json={"url": "https://hooks.example.com/in?email=[#EMAIL#]", "sections": ["fields", "lead-status"]},
    )
    return {"list": lst, "plan": plan, "automation": automation, "action": action}


def test_preview_shows_the_exact_request_and_writes_nothing(api: Api) -> None:
    w = _world(api, contacts=1)
    contact = api.ok("GET", f"/api/lists/{w['list']['id']}/contacts")["items"][0]
    shown = api.ok("POST", f"/api/actions/{w['action']['id']}/preview", json={"contact_id": contact["id"]})
    assert shown["method"] == "POST"
    assert shown["url"] == "https://hooks.example.com/in?email=c0%40example.com"
    assert "contact%5Bemail%5D=c0%40example.com" in shown["body"]
    assert shown["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert shown["size_bytes"] == len(shown["body"])
    assert shown["php_variables"] > 5
    assert shown["warnings"] == []
    unsaved = {"url": "https://hooks.example.com/get?plan=[#PLAN#]", "method": "GET"}
    as_get = api.ok(
        "POST",
        f"/api/actions/{w['action']['id']}/preview",
        json={"contact_id": contact["id"], "settings": unsaved},
    )
    assert (as_get["method"], as_get["url"], as_get["body"]) == (
        "GET",
        "https://hooks.example.com/get?plan=free",
        "",
    )
    other_list = api.ok("POST", "/api/lists", 201, json={"name": "Other"})
    stranger = api.ok("POST", f"/api/lists/{other_list['id']}/contacts", 201, json={"email": "s@example.com"})
    refused = api.post(
        f"/api/actions/{w['action']['id']}/preview", json={"contact_id": stranger["contact"]["id"]}
    )
    assert refused.status_code == 422
    assert refused.json()["field"] == "contact_id"
    assert api.count(t.deliveries) == 0


def _wait_run(api: Api, run_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        run = api.ok("GET", f"/api/runs/{run_id}")
        if run["state"] != "running":
            return dict(run)
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


def test_manual_run_progress_and_deliveries(api: Api) -> None:
    w = _world(api, contacts=9)
    started = api.ok("POST", f"/api/automations/{w['automation']['id']}/runs", 202)
    assert started["total"] == 9
    assert 0.0 <= started["progress"] <= 1.0
    run = _wait_run(api, started["id"])
    assert (run["state"], run["scanned"], run["matched"], run["enqueued"], run["progress"]) == (
        "completed",
        9,
        4,
        4,
        1.0,
    )
    assert [r["id"] for r in api.ok("GET", f"/api/automations/{w['automation']['id']}/runs")] == [
        started["id"]
    ]
    # a second run finds everyone already entered (`once`): no new deliveries
    second = _wait_run(api, api.ok("POST", f"/api/automations/{w['automation']['id']}/runs", 202)["id"])
    assert (second["matched"], second["enqueued"]) == (4, 0)
    assert api.count(t.deliveries) == 4

    # listing: newest first, pages of 3, filters
    page1 = api.ok("GET", "/api/deliveries", params={"limit": 3})
    page2 = api.ok("GET", "/api/deliveries", params={"limit": 3, "cursor": page1["next_cursor"]})
    ids = [d["id"] for d in page1["items"] + page2["items"]]
    assert len(ids) == 4
    assert ids == sorted(ids, reverse=True)
    assert page2["next_cursor"] is None
    assert (
        len(
            api.ok("GET", "/api/deliveries", params={"action_id": w["action"]["id"], "state": "pending"})[
                "items"
            ]
        )
        == 4
    )
    assert api.ok("GET", "/api/deliveries", params={"state": "failed"})["items"] == []
    assert api.get("/api/deliveries", params={"state": "lost"}).json()["field"] == "query.state"
    one = page1["items"][0]
    assert len(api.ok("GET", "/api/deliveries", params={"contact_id": one["contact_id"]})["items"]) == 1

    # cancel a pending one; retry brings it back; a pending one cannot be retried
    cancelled = api.ok("POST", f"/api/deliveries/{one['id']}/cancel")
    assert cancelled["state"] == "cancelled"
    assert api.post(f"/api/deliveries/{page1['items'][1]['id']}/retry").status_code == 409
    assert api.ok("POST", f"/api/deliveries/{one['id']}/retry")["state"] == "pending"

    # recover since T: only failed deliveries of the action created at or after T
    with api.engine.begin() as conn:
        conn.execute(t.deliveries.update().where(t.deliveries.c.id.in_(ids[:3])).values(state="failed"))
        created = conn.execute(sa.select(sa.func.min(t.deliveries.c.created_at))).scalar_one()
    since = created.replace(tzinfo=UTC) + timedelta(days=1)
    url = f"/api/actions/{w['action']['id']}/recover"
    assert api.ok("POST", url, json={"since": since.isoformat()})["requeued"] == 0
    assert api.ok("POST", url, json={"since": (since - timedelta(days=2)).isoformat()})["requeued"] == 3
    assert api.count(t.deliveries, t.deliveries.c.state == "pending") == 4
    assert api.post(url, json={"since": "2026-01-01T00:00:00"}).json()["field"] == "since"  # needs a zone
    detail = api.ok("GET", f"/api/deliveries/{ids[0]}")
    assert detail["body"].startswith("transactionid=")
    assert detail["content_type"] == "application/x-www-form-urlencoded"


def test_secret_rotation_and_action_updates(api: Api) -> None:
    w = _world(api, contacts=1)
    action = w["action"]
    assert action["secret"].startswith("whsec_")
    rotated = api.ok("POST", f"/api/actions/{action['id']}/rotate-secret")
    assert rotated["secret"] != action["secret"]
    assert datetime.fromisoformat(rotated["previous_secret_expires_at"]) > datetime.fromisoformat(
        rotated["updated_at"]
    )
    updated = api.ok("PUT", f"/api/actions/{action['id']}", json={"url": "https://other.example.com:8443/x"})
    assert updated["endpoint"] == "https://other.example.com:8443"
    assert updated["secret"] == rotated["secret"]
    bad = api.client.put(f"/api/actions/{action['id']}", json={"url": "https://x.test/[#NOPE#]"})
    assert bad.status_code == 422
    assert api.ok("GET", f"/api/actions/{action['id']}")["endpoint"] == "https://other.example.com:8443"
    paused = {
        **{k: w["automation"][k] for k in ("list_id", "name", "trigger", "conditions", "reentry")},
        "status": "paused",
    }
    assert api.ok("PUT", f"/api/automations/{w['automation']['id']}", json=paused)["status"] == "paused"
    assert api.post(f"/api/automations/{w['automation']['id']}/runs").status_code == 422
    api.ok("DELETE", f"/api/actions/{action['id']}", 204)
    assert api.ok("GET", f"/api/automations/{w['automation']['id']}/actions") == []
    api.ok("DELETE", f"/api/automations/{w['automation']['id']}", 204)
    assert api.get(f"/api/automations/{w['automation']['id']}").status_code == 404


def test_endpoints_are_per_account_even_for_the_same_host(api: Api) -> None:
    w = _world(api, contacts=0)
    _, other_key = new_account(api.engine, "other")
    theirs = {"Authorization": f"Bearer {other_key}"}
    lst = api.client.post("/api/lists", json={"name": "theirs"}, headers=theirs).json()
    auto = api.client.post(
        "/api/automations",
        json={"list_id": lst["id"], "name": "B", "trigger": {"event": "manual"}},
        headers=theirs,
    ).json()
    made = api.client.post(
        f"/api/automations/{auto['id']}/actions", json={"url": "https://hooks.example.com/b"}, headers=theirs
    )
    assert made.status_code == 201
    [mine] = api.ok("GET", "/api/endpoints")
    [their_endpoint] = api.client.get("/api/endpoints", headers=theirs).json()
    assert mine["endpoint"] == their_endpoint["endpoint"] == w["action"]["endpoint"]
    assert mine["id"] != their_endpoint["id"]
    assert api.get(f"/api/endpoints/{their_endpoint['id']}").status_code == 404
    assert api.post(f"/api/endpoints/{their_endpoint['id']}/disable").status_code == 404
    disabled = api.post(f"/api/endpoints/{mine['id']}/disable")
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False
    theirs_now = api.client.get(f"/api/endpoints/{their_endpoint['id']}", headers=theirs).json()
    assert theirs_now["enabled"] is True
    assert theirs_now["events"] == []
    assert api.ok("POST", f"/api/endpoints/{mine['id']}/enable")["enabled"] is True


def _run_state(api: Api, run_id: int) -> tuple[str, int]:
    deadline = time.monotonic() + 120
    while True:
        with api.engine.connect() as conn:
            row = conn.execute(sa.select(t.manual_runs).where(t.manual_runs.c.id == run_id)).one()
        if row.state != "running" or time.monotonic() > deadline:
            return row.state, row.enqueued
        time.sleep(0.05)


def test_a_run_left_running_resumes_when_an_app_starts_or_its_progress_is_read(api: Api, db_url: str) -> None:
    w = _world(api, contacts=6)
    settings = Settings(database_url=db_url)
    rt = Runtime.create(settings, engine=api.engine)
    with api.engine.begin() as conn:  # as if the server stopped right after starting it
        orphan = manual.start_run(conn, rt, w["automation"]["id"])
    with serve(create_app(settings, engine=api.engine)):
        assert _run_state(api, orphan.id) == ("completed", 3)
    second = _world(api, contacts=2)
    with api.engine.begin() as conn:
        orphan = manual.start_run(conn, rt, second["automation"]["id"])
    api.ok("GET", f"/api/runs/{orphan.id}")
    assert _run_state(api, orphan.id) == ("completed", 1)
