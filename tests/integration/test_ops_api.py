"""A contact's activity through the API (paged, by kind) and an endpoint's throttles set by its owner,
on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contactsync.db import platform as t
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery.endpoints import EndpointKey
from support.api import Api, api_client, automation_with_action


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with api_client(db_url) as client:
        yield client


def test_contact_activity_newest_first_by_kind_and_paged(api: Api) -> None:
    lst = api.ok("POST", "/api/lists", 201, json={"name": "L"})
    cid = api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": "a@example.com"})["contact"][
        "id"
    ]
    events = []
    for i in range(7):
        events.append({"kind": "page.visited", "contact_id": cid, "url": f"https://x.test/{i}"})
        events.append({"kind": "goal.reached", "contact_id": cid, "goal_id": i, "goal_name": f"g{i}"})
    api.ok("POST", "/api/events", 202, json={"events": events})
    pages, cursor = [], None
    while True:
        page = api.ok(
            "GET",
            f"/api/contacts/{cid}/activity",
            params={"limit": 4, **({"cursor": cursor} if cursor else {})},
        )
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    seen = [item for items in pages for item in items]
    assert [len(p) for p in pages] == [4, 4, 4, 2]
    assert [s["id"] for s in seen] == sorted((s["id"] for s in seen), reverse=True)
    goals = api.ok("GET", f"/api/contacts/{cid}/activity", params={"kind": "goal"})["items"]
    assert [g["ref_id"] for g in goals] == [6, 5, 4, 3, 2, 1, 0]
    assert goals[0]["name"] == "g6"
    assert api.client.get(f"/api/contacts/{cid}/activity", params={"kind": "nope"}).status_code == 422
    assert api.client.get("/api/contacts/999999/activity").status_code == 404


def test_an_endpoints_owner_sets_its_throttles(api: Api) -> None:
    automation_with_action(api, "http://127.0.0.1:9/hook")
    with api.engine.begin() as conn:  # the row a first delivery would create
        endpoint_rows.ensure(conn, [EndpointKey(api.account_id, "http://127.0.0.1:9")])
    endpoint = api.ok("GET", "/api/endpoints")[0]
    changed = api.ok(
        "PUT", f"/api/endpoints/{endpoint['id']}/limits", json={"max_in_flight": 3, "rate_limit_per_s": 2.5}
    )
    assert (changed["max_in_flight"], changed["rate_limit_per_s"]) == (3, 2.5)
    assert changed["edited_at"] is not None
    with api.engine.connect() as conn:
        limits = endpoint_rows.limits(conn, [EndpointKey(api.account_id, "http://127.0.0.1:9")])
    assert limits[EndpointKey(api.account_id, "http://127.0.0.1:9")] == endpoint_rows.Limits(3, 2.5)
    cleared = api.ok("PUT", f"/api/endpoints/{endpoint['id']}/limits", json={"max_in_flight": 10})
    assert cleared["rate_limit_per_s"] is None
    for bad in ({"max_in_flight": 0}, {"max_in_flight": 5, "rate_limit_per_s": 0}, {}):
        answer = api.client.put(f"/api/endpoints/{endpoint['id']}/limits", json=bad)
        assert answer.status_code == 422, bad
    assert api.count(t.audit_log, t.audit_log.c.action == "endpoint.limits") == 2
