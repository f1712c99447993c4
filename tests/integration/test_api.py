"""REST API on SQLite and PostgreSQL: CRUD, auth, pagination, bad input that leaves nothing half-written."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from contactsync.db import platform as t
from support.api import Api, api_client, new_account


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with api_client(db_url, public_base_url="https://app.test") as client:
        yield client


def _list_with_fields(api: Api) -> tuple[int, dict[str, int]]:
    lst = api.ok("POST", "/api/lists", 201, json={"name": "Customers"})
    ids = {}
    for name, kind, extra in [
        ("First Name", "text", {}),
        ("Age", "number", {}),
        ("Birthday", "date", {}),
        ("Plan", "choice", {"choices": ["free", "pro"]}),
    ]:
        ids[name] = api.ok(
            "POST", f"/api/lists/{lst['id']}/fields", 201, json={"name": name, "type": kind, **extra}
        )["id"]
    return lst["id"], ids


def test_lists_fields_contacts_crud(api: Api) -> None:
    list_id, f = _list_with_fields(api)
    assert api.ok("GET", f"/api/lists/{list_id}")["name"] == "Customers"
    assert [x["shortcode_key"] for x in api.ok("GET", f"/api/lists/{list_id}/fields")] == [
        "FIRST_NAME",
        "AGE",
        "BIRTHDAY",
        "PLAN",
    ]
    created = api.ok(
        "POST",
        f"/api/lists/{list_id}/contacts",
        201,
        json={
            "email": "Jane@Example.com",
            "phone": "+1 555 123 4567",
            "fields": {"FIRST_NAME": "Jane", "AGE": 41},
        },
    )
    assert created["created"] is True
    contact = created["contact"]
    assert {v["name"]: v["value"] for v in contact["fields"]} == {"First Name": "Jane", "Age": "41"}
    # upsert by email, any case: same contact, updated
    again = api.ok(
        "POST",
        f"/api/lists/{list_id}/contacts",
        200,
        json={"email": "jane@example.com", "fields": {str(f["Plan"]): "pro"}},
    )
    assert again["created"] is False
    assert again["contact"]["id"] == contact["id"]
    assert again["changed_fields"] == [f["Plan"]]
    patched = api.ok(
        "PATCH", f"/api/contacts/{contact['id']}", json={"status": "unsubscribed", "fields": {"AGE": None}}
    )
    assert patched["contact"]["status"] == "unsubscribed"
    assert "Age" not in {v["name"] for v in patched["contact"]["fields"]}
    assert api.ok("GET", f"/api/contacts/{contact['id']}")["email"] == "jane@example.com"  # last write wins
    found = api.ok("GET", f"/api/lists/{list_id}/contacts", params={"email": "JANE@example.COM"})
    assert [c["id"] for c in found["items"]] == [contact["id"]]
    api.ok("DELETE", f"/api/contacts/{contact['id']}", 204)
    assert api.get(f"/api/contacts/{contact['id']}").status_code == 404
    assert api.count(t.contacts) == 0


def test_thresholds_and_lead_status(api: Api) -> None:
    assert api.ok("GET", "/api/lead-status-thresholds")["thresholds"][0] == {"min_score": 0, "label": "Cold"}
    body = {"thresholds": [{"min_score": 0, "label": "Ice"}, {"min_score": 10, "label": "Fire"}]}
    assert api.ok("PUT", "/api/lead-status-thresholds", json=body) == body
    list_id, _ = _list_with_fields(api)
    c = api.ok("POST", f"/api/lists/{list_id}/contacts", 201, json={"email": "a@b.co"})["contact"]
    event = {"kind": "lead_score.changed", "contact_id": c["id"], "score_id": 1, "name": "visit", "value": 12}
    assert api.ok("POST", "/api/events", 202, json={"events": [event]})["accepted"] == 1
    assert api.ok("GET", f"/api/contacts/{c['id']}")["lead_status"] == "Fire"


def test_auth_missing_wrong_revoked_and_foreign(api: Api) -> None:
    client = api.client
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer csk_nope_nope"},
        {"Authorization": "Basic eDp5"},
    ):
        response = client.get("/api/lists", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
    new = api.ok("POST", "/api/keys", 201, json={"name": "ci"})
    assert new["key"].startswith("csk_")
    assert new["prefix"] in new["key"]
    listed = api.ok("GET", "/api/keys")
    assert all("key" not in k for k in listed)
    assert {k["name"] for k in listed} == {"tests", "ci"}
    with api.engine.connect() as conn:
        stored = conn.execute(t.api_keys.select().where(t.api_keys.c.id == new["id"])).one()
    assert new["key"] not in stored.key_hash  # hashed at rest
    other = {"Authorization": f"Bearer {new['key']}"}
    assert client.get("/api/lists", headers=other).status_code == 200
    assert api.ok("DELETE", f"/api/keys/{new['id']}")["revoked_at"] is not None
    assert client.get("/api/lists", headers=other).status_code == 401
    # another account's list looks like a missing one
    _, foreign_key = new_account(api.engine, "other")
    theirs = client.post(
        "/api/lists", json={"name": "theirs"}, headers={"Authorization": f"Bearer {foreign_key}"}
    )
    assert theirs.status_code == 201
    assert api.get(f"/api/lists/{theirs.json()['id']}").status_code == 404
    assert api.post(f"/api/lists/{theirs.json()['id']}/contacts", json={"email": "x@y.co"}).status_code == 404
    assert api.count(t.contacts) == 0
    # the OpenAPI document is public and declares the bearer scheme
    spec = client.get("/api/openapi.json", headers={"Authorization": ""}).json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_pagination_walks_every_contact_once(api: Api) -> None:
    list_id, _ = _list_with_fields(api)
    for i in range(7):
        api.ok("POST", f"/api/lists/{list_id}/contacts", 201, json={"email": f"c{i}@example.com"})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.ok("GET", f"/api/lists/{list_id}/contacts", params=params)
        seen += [c["email"] for c in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f"c{i}@example.com" for i in range(7)]
    assert api.get(f"/api/lists/{list_id}/contacts", params={"limit": 0}).status_code == 422
    assert api.get(f"/api/lists/{list_id}/contacts", params={"cursor": "x"}).json()["field"] == "query.cursor"


def _error(response: object, status: int) -> dict[str, object]:
    assert getattr(response, "status_code") == status, getattr(response, "text")  # noqa: B009
    body = response.json()  # type: ignore[attr-defined]
    assert body["message"]
    return dict(body)


def test_bad_contacts_name_the_field_and_write_nothing(api: Api) -> None:
    list_id, _f = _list_with_fields(api)
    url = f"/api/lists/{list_id}/contacts"
    assert (
        _error(api.post(url, json={"email": "a@b.co", "fields": {"AGE": "forty"}}), 422)["field"]
        == "fields.AGE"
    )
    assert (
        _error(api.post(url, json={"email": "a@b.co", "fields": {"BIRTHDAY": "31/12/2020"}}), 422)["field"]
        == "fields.BIRTHDAY"
    )
    assert (
        _error(api.post(url, json={"email": "a@b.co", "fields": {"PLAN": "gold"}}), 422)["field"]
        == "fields.PLAN"
    )
    assert (
        _error(api.post(url, json={"email": "a@b.co", "fields": {"NOPE": "x"}}), 404)["field"]
        == "fields.NOPE"
    )
    assert (
        _error(api.post(url, json={"email": "a@b.co", "fields": {"99999": "x"}}), 404)["field"]
        == "fields.99999"
    )
    assert _error(api.post(url, json={"email": "not-an-email"}), 422)["field"] == "email"
    assert _error(api.post(url, json={"email": 5}), 422)["field"] == "email"
    assert _error(api.post(url, json={"email": "a@b.co", "bogus": 1}), 422)["field"] == "bogus"
    assert (
        _error(api.post(url, json={"email": "a@b.co", "fields": {"AGE": [1]}}), 422)["field"] == "fields.AGE"
    )
    assert _error(api.post("/api/lists/424242/contacts", json={"email": "a@b.co"}), 404)["field"] == "list_id"
    assert _error(api.post(url, content=b"{nope", headers={"Content-Type": "application/json"}), 400)
    assert api.get("/api/contacts/0").status_code == 422
    assert api.get(f"/api/contacts/{2**64}").status_code == 422
    assert api.count(t.contacts) == 0
    assert api.count(t.field_values) == 0
    bad_field = api.post(f"/api/lists/{list_id}/fields", json={"name": "Tier", "type": "choice"})
    assert _error(bad_field, 422)["field"] == ""  # the cross-field rule names the model
    assert (
        _error(api.post(f"/api/lists/{list_id}/fields", json={"name": "X", "type": "money"}), 422)["field"]
        == "type"
    )
    assert api.count(t.fields) == 4


def test_import_csv_and_ndjson_all_or_nothing(api: Api) -> None:
    list_id, _ = _list_with_fields(api)
    url = f"/api/lists/{list_id}/contacts/import"
    csv_body = "email,phone,FIRST_NAME,AGE\na@example.com,+15551234567,Ann,30\nb@example.com,,Bob,\n"
    result = api.ok("POST", url, content=csv_body.encode(), headers={"Content-Type": "text/csv"})
    assert (result["rows"], result["created"]) == (2, 2)
    nd = '{"email": "a@example.com", "fields": {"AGE": 31}}\n\n{"email": "c@example.com"}\n'
    result = api.ok("POST", url, content=nd.encode(), headers={"Content-Type": "application/x-ndjson"})
    assert (result["created"], result["updated"]) == (1, 1)
    assert api.count(t.contacts) == 3
    # a bad third row: nothing of the import is written
    bad = "email,AGE\nd@example.com,1\ne@example.com,2\nf@example.com,many\n"
    body = _error(api.post(url, content=bad.encode(), headers={"Content-Type": "text/csv"}), 422)
    assert body["field"] == "rows[2].fields.AGE"
    bad_nd = '{"email": "g@example.com"}\n{"email": "h@example.com", "fields": {"NOPE": 1}}\n'
    assert (
        _error(api.post(url, content=bad_nd.encode(), headers={"Content-Type": "application/x-ndjson"}), 404)[
            "field"
        ]
        == "rows[1].fields.NOPE"
    )
    assert (
        _error(
            api.post(url, content=b'{"email": 3}\n', headers={"Content-Type": "application/x-ndjson"}), 422
        )["field"]
        == "rows[0].email"
    )
    assert (
        _error(api.post(url, content=b"name\nx\n", headers={"Content-Type": "text/csv"}), 422)["field"]
        == "email"
    )
    assert _error(api.post(url, content=b"x", headers={"Content-Type": "application/pdf"}), 422)
    assert api.count(t.contacts) == 3


def test_malformed_events_write_nothing(api: Api) -> None:
    list_id, _ = _list_with_fields(api)
    c = api.ok("POST", f"/api/lists/{list_id}/contacts", 201, json={"email": "a@b.co"})["contact"]
    good = {"kind": "page.visited", "contact_id": c["id"], "url": "https://shop.test/a"}
    cases = [
        (
            {"events": [good, {"kind": "page.visited", "contact_id": 987654, "url": "x"}]},
            404,
            "events[1].contact_id",
        ),
        (
            {"events": [good, {"kind": "campaign.opened", "contact_id": c["id"]}]},
            422,
            "events[1].campaign_id",
        ),
        ({"events": [good, {"kind": "teleported", "contact_id": c["id"]}]}, 422, "events[1]"),
        ({"events": [{"kind": "link.clicked", "url": "u"}]}, 422, "events[0]"),
        ({"events": [{**good, "occurred_at": "yesterday"}]}, 422, "events[0].occurred_at"),
        (
            {"events": [{"kind": "page.visited", "list_id": list_id, "email": "zz@b.co", "url": "u"}]},
            404,
            "events[0].email",
        ),
        ({"events": []}, 422, "events"),
        ({"events": [{**good, "contact_id": 2**70}]}, 422, "events[0].contact_id"),
    ]
    for body, status, fld in cases:
        got = _error(api.post("/api/events", json=body), status)
        assert got["field"] == fld, (body, got)
    assert api.count(t.activities) == 0
    by_email = {"kind": "page.visited", "list_id": list_id, "email": "A@B.CO", "url": "https://shop.test/b"}
    assert api.ok("POST", "/api/events", 202, json={"events": [good, by_email]})["accepted"] == 2
    assert api.count(t.activities) == 2


def test_actions_refuse_bad_templates_and_schemes(api: Api) -> None:
    list_id, _ = _list_with_fields(api)
    auto = api.ok(
        "POST",
        "/api/automations",
        201,
        json={"list_id": list_id, "name": "A", "trigger": {"event": "contact.created"}},
    )
    url = f"/api/automations/{auto['id']}/actions"
    broken = _error(api.post(url, json={"url": "https://hooks.test/x?n=[#FIRST_NAM#]"}), 422)
    assert broken["field"] == "url"
    assert "line 1, column" in str(broken["message"])
    assert "FIRST_NAME" in str(broken["message"])
    multi = _error(api.post(url, json={"url": "https://hooks.test/x?\n[#FIRST_NAME|nope#]"}), 422)
    assert "line 2" in str(multi["message"])
    for scheme in ("ftp://hooks.test/", "javascript:alert(1)", "file:///etc/passwd"):
        assert _error(api.post(url, json={"url": scheme}), 422)["field"] == "url"
    assert _error(api.post(url, json={"url": "https://h.test/", "sections": ["fields", "bogus"]}), 422)[
        "field"
    ] == ("sections")
    assert _error(
        api.post(url, json={"url": "https://h.test/", "method": "GET", "content_type": "json"}), 422
    )
    hdr = {"url": "https://h.test/", "headers": [{"name": "webhook-signature", "value": "x"}]}
    assert _error(api.post(url, json=hdr), 422)["field"] == "headers[0].name"
    assert (
        _error(api.post(url, json={"url": "https://h.test/", "max_items": "lots"}), 422)["field"]
        == "max_items"
    )
    assert api.count(t.actions) == 0
    # automations: unknown field in conditions, wrong operator for a number field
    bad_auto = {
        "list_id": list_id,
        "name": "B",
        "trigger": {"event": "contact.created"},
        "conditions": {
            "op": "and",
            "conditions": [{"type": "field", "subject": "field:987654", "op": "eq", "value": "x"}],
        },
    }
    assert str(_error(api.post("/api/automations", json=bad_auto), 404)["field"]).endswith(
        "conditions[0].subject"
    )
    assert (
        _error(api.post("/api/automations", json={**bad_auto, "list_id": 987654}), 404)["field"] == "list_id"
    )
    assert _error(api.post("/api/automations", json={**bad_auto, "trigger": {"event": "nope"}}), 422)[
        "field"
    ] == ("trigger.event")
    assert api.count(t.automations) == 1


def test_oversized_bodies_are_refused(api: Api) -> None:
    big = b"x" * (10 * 1024 * 1024 + 1)
    response = api.post("/api/events", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["field"] == "body"
    list_id, _ = _list_with_fields(api)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b"email\n"
        for i in range(21):
            yield f"c{i}@example.com\n".encode().ljust(1024 * 1024, b" ")

    streamed = api.post(
        f"/api/lists/{list_id}/contacts/import", content=chunks(), headers={"Content-Type": "text/csv"}
    )
    assert streamed.status_code == 413
    assert api.count(t.contacts) == 0


def test_concurrent_upserts_of_one_email_converge_on_one_contact(api: Api) -> None:
    list_id, _ = _list_with_fields(api)
    url = f"{api.base_url}/api/lists/{list_id}/contacts"
    headers = {"Authorization": f"Bearer {api.key}"}
    barrier = threading.Barrier(8)

    def upsert(i: int) -> tuple[int, int]:
        with httpx.Client(headers=headers, timeout=60) as client:
            barrier.wait()
            response = client.post(url, json={"email": "Race@Example.com", "fields": {"AGE": i}})
            return response.status_code, response.json()["contact"]["id"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(upsert, range(8)))
    assert sorted(code for code, _ in results) == [200] * 7 + [201]
    assert len({cid for _, cid in results}) == 1
    assert api.count(t.contacts) == 1
