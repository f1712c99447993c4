"""Rename and delete lists and fields, and change a shortcode key, through the real API on SQLite and
PostgreSQL: nothing in use is deleted (the 409 names each user), and a key change either rewrites the
templates that use it in the same step or is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contactsync.automation.editing import rewrite_key
from contactsync.db import platform as t
from support.api import Api, api_client


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with api_client(db_url) as client:
        yield client


def _world(api: Api) -> dict[str, Any]:
    lst = api.ok("POST", "/api/lists", 201, json={"name": "Buyers"})
    city = api.ok("POST", f"/api/lists/{lst['id']}/fields", 201, json={"name": "City"})
    plan = api.ok("POST", f"/api/lists/{lst['id']}/fields", 201, json={"name": "Plan"})
    spare = api.ok("POST", f"/api/lists/{lst['id']}/fields", 201, json={"name": "Spare"})
    automation = api.ok(
        "POST",
        "/api/automations",
        201,
        json={
            "list_id": lst["id"],
            "name": "Movers",
            "trigger": {"event": "contact.updated", "fields": [plan["id"]]},
        },
    )
    url = f"http://127.0.0.1:9/hook?c=[#PROPER CITY/2#]&again=[#CITY#]&id=[#FIELD_{city['id']}#]&e=[#EMAIL#]"
    action = api.ok("POST", f"/api/automations/{automation['id']}/actions", 201, json={"url": url})
    api.ok(
        "POST",
        f"/api/lists/{lst['id']}/contacts",
        201,
        json={"email": "a@example.com", "fields": {"City": "x"}},
    )
    return {
        "list": lst,
        "city": city,
        "plan": plan,
        "spare": spare,
        "automation": automation,
        "action": action,
    }


def test_fields_in_use_are_not_deleted_and_keys_change_with_their_templates(api: Api) -> None:
    w = _world(api)
    refused = api.client.delete(f"/api/fields/{w['city']['id']}")
    assert refused.status_code == 409
    assert f"action #{w['action']['id']}" in refused.json()["message"]
    trigger = api.client.delete(f"/api/fields/{w['plan']['id']}")
    assert trigger.status_code == 409
    assert "the trigger of automation 'Movers'" in trigger.json()["message"]

    # a key some template uses: refused unless the templates change with it
    change = api.client.patch(f"/api/fields/{w['city']['id']}", json={"shortcode_key": "TOWN"})
    assert change.status_code == 409
    assert "[#CITY#]" in change.json()["message"]
    assert (
        api.ok("GET", f"/api/actions/{w['action']['id']}")["settings"]["url"]
        == w["action"]["settings"]["url"]
    )
    done = api.ok(
        "PATCH", f"/api/fields/{w['city']['id']}", json={"shortcode_key": "town", "update_templates": True}
    )
    assert done["field"]["shortcode_key"] == "TOWN"
    assert done["updated_actions"] == [w["action"]["id"]]
    url = api.ok("GET", f"/api/actions/{w['action']['id']}")["settings"]["url"]
    assert url == (
        "http://127.0.0.1:9/hook?c=[#PROPER TOWN/2#]&again=[#TOWN#]"
        f"&id=[#FIELD_{w['city']['id']}#]&e=[#EMAIL#]"
    )
    contact = api.ok("GET", f"/api/lists/{w['list']['id']}/contacts")["items"][0]
    preview = api.ok("POST", f"/api/actions/{w['action']['id']}/preview", json={"contact_id": contact["id"]})
    assert "again=x" in preview["url"]  # the rewritten template still renders the field

    # a taken key, a built-in, and choices on a text field are refused with the field named
    taken = api.client.patch(f"/api/fields/{w['spare']['id']}", json={"shortcode_key": "TOWN"})
    assert taken.status_code == 422
    assert taken.json()["field"] == "shortcode_key"
    assert (
        api.client.patch(f"/api/fields/{w['spare']['id']}", json={"shortcode_key": "EMAIL"}).status_code
        == 422
    )
    assert api.client.patch(f"/api/fields/{w['spare']['id']}", json={"choices": ["a"]}).status_code == 422

    # a field nothing uses: renamed, then deleted with its values
    assert api.ok("PATCH", f"/api/fields/{w['spare']['id']}", json={"name": "Old"})["field"]["name"] == "Old"
    api.ok("DELETE", f"/api/fields/{w['spare']['id']}")
    assert api.count(t.fields, t.fields.c.id == w["spare"]["id"]) == 0
    audited = api.count(t.audit_log, t.audit_log.c.action.in_(["field.update", "field.delete"]))
    assert audited == 3  # the refused calls wrote nothing


def test_lists_are_renamed_and_deleted_only_once_unused(api: Api) -> None:
    w = _world(api)
    list_id = w["list"]["id"]
    assert api.ok("PATCH", f"/api/lists/{list_id}", json={"name": "Clients"})["name"] == "Clients"
    refused = api.client.delete(f"/api/lists/{list_id}")
    assert refused.status_code == 409
    assert "'Movers'" in refused.json()["message"]
    api.ok("DELETE", f"/api/automations/{w['automation']['id']}", 204)
    api.ok("DELETE", f"/api/lists/{list_id}")
    assert api.client.get(f"/api/lists/{list_id}").status_code == 404
    assert api.count(t.contacts, t.contacts.c.list_id == list_id) == 0
    assert api.count(t.fields, t.fields.c.list_id == list_id) == 0


KEYS = st.sampled_from(["CITY", "CITYX", "XCITY", "EMAIL", "FIELD_3"])
CALLS = st.sampled_from(["", "PROPER ", "LEFT:3 ", "UPPER PROPER ", 'REPLACE:"CITY":x '])
WORDS = st.sampled_from(["", "/2", "/-1"])
TEXTS = st.text(alphabet="abcCITY/?=& ", max_size=8)  # no "[#": plain text, never a shortcode


@given(st.lists(st.one_of(st.tuples(CALLS, KEYS, WORDS), TEXTS), max_size=8))
def test_rewriting_a_key_touches_only_that_fields_shortcodes(parts: list[Any]) -> None:
    def render(rename: str) -> str:
        out = "http://h/?"
        for part in parts:
            if isinstance(part, tuple):
                calls, key, word = part
                out += f"[#{calls}{rename if key == 'CITY' else key}{word}#]"
            else:
                out += part
        return out

    template, expected = render("CITY"), render("TOWN")
    assert rewrite_key(template, "CITY", "TOWN") == expected
    assert rewrite_key(expected, "TOWN", "CITY") == template
