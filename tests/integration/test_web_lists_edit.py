"""The lists page's edit forms over real HTTP (SQLite and PostgreSQL): rename and delete lists and
fields, a shortcode key change with or without updating the templates, a choice field's choices; each
refusal shown beside its form naming what is in the way, with what was typed kept; one audit row per
change."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

from support.api import Api, api_client
from support.web import Ui, audit_actions, person, sign_in

EDITOR = "ed@example.com"


@contextmanager
def setup(db_url: str) -> Iterator[tuple[Api, Ui, dict[str, Any]]]:
    """A list whose City field a condition uses and whose key an action's URL uses, a Plan choice field,
    an unused Note field, a second list nothing uses, and a signed-in editor."""
    with api_client(db_url, session_secret="s", admin_password="an operator's password") as api:
        lid = api.ok("POST", "/api/lists", 201, json={"name": "Customers"})["id"]
        spare = api.ok("POST", "/api/lists", 201, json={"name": "Old imports"})["id"]

        def field(body: dict[str, Any]) -> int:
            return int(api.ok("POST", f"/api/lists/{lid}/fields", 201, json=body)["id"])

        city = field({"name": "City", "shortcode_key": "CITY"})
        plan = field({"name": "Plan", "type": "choice", "choices": ["free", "pro"]})
        note = field({"name": "Note"})
        body = {
            "list_id": lid,
            "name": "Paris customers",
            "trigger": {"event": "manual"},
            "conditions": {"type": "group", "op": "and", "conditions": [
                {"type": "field", "subject": f"field:{city}", "op": "eq", "value": "Paris"}]},
        }  # fmt: skip
        auto = api.ok("POST", "/api/automations", 201, json=body)["id"]
        url = "https://ads.example/in?town=[#UPPER CITY#]&c=[#CITY#]"
        action = api.ok("POST", f"/api/automations/{auto}/actions", 201, json={"url": url})["id"]
        person(api.engine, EDITOR, account_id=api.account_id, role="editor")
        with closing(sign_in(api.base_url, EDITOR)) as ui:
            yield api, ui, {"list": lid, "spare": spare, "city": city, "plan": plan, "note": note,
                            "automation": auto, "action": action}  # fmt: skip


def error_of(page: str, form: str) -> str:
    found = re.search(rf'id="error-{form}">(.*?)</p>', page, re.S)
    assert found is not None, f"no error beside {form}"
    return html.unescape(found.group(1))


def test_renaming_and_deleting_lists(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        lid = ids["list"]
        assert ui.post(f"/lists/{lid}/rename", {"name": "Clients"}).status_code == 303
        assert api.ok("GET", f"/api/lists/{lid}")["name"] == "Clients"

        empty = ui.post(f"/lists/{lid}/rename", {"name": " "})
        assert empty.status_code == 422
        assert error_of(empty.text, f"list-{lid}").startswith("name: String should have at least 1 character")

        in_use = ui.post(f"/lists/{lid}/delete", {"confirm": "yes"})
        assert in_use.status_code == 422
        assert error_of(in_use.text, f"delete-list-{lid}") == (
            f"the list is used by automations 'Paris customers' (#{ids['automation']}): delete them first"
        )
        assert api.get(f"/api/lists/{lid}").status_code == 200

        unconfirmed = ui.post(f"/lists/{ids['spare']}/delete")
        assert "confirm" in unconfirmed.headers["location"]
        assert ui.post(f"/lists/{ids['spare']}/delete", {"confirm": "yes"}).status_code == 303
        assert api.get(f"/api/lists/{ids['spare']}").status_code == 404
        assert audit_actions(api.engine) == [
            ("list.rename", EDITOR, str(lid), {"name": "Clients"}),
            ("list.delete", EDITOR, str(ids["spare"]), {"name": "Old imports"}),
        ]


def test_a_key_change_is_refused_while_templates_use_it_unless_they_are_updated_too(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        form = f"field-{ids['city']}"
        page = ui.get("/lists").text
        assert "also update the templates that use it" in page

        refused = ui.post(f"/fields/{ids['city']}", {"name": "Town", "shortcode_key": "TOWN"})
        assert refused.status_code == 422
        assert error_of(refused.text, form).startswith(
            f"[#CITY#] is used by action #{ids['action']} of automation 'Paris customers'"
        )
        assert 'value="TOWN"' in refused.text  # what was typed stays
        assert 'value="Town"' in refused.text
        assert api.ok("GET", f"/api/lists/{ids['list']}/fields")[0]["shortcode_key"] == "CITY"

        taken = ui.post(f"/fields/{ids['city']}", {"name": "City", "shortcode_key": "note"})
        assert error_of(taken.text, form) == "shortcode key 'NOTE' is already used in this list"
        bad = ui.post(f"/fields/{ids['city']}", {"name": "City", "shortcode_key": "1st"})
        assert error_of(bad.text, form).startswith("shortcode_key: String should match pattern")

        done = ui.post(
            f"/fields/{ids['city']}", {"name": "Town", "shortcode_key": "town", "update_templates": "yes"}
        )
        assert done.status_code == 303
        assert f"actions #{ids['action']} now use [#TOWN#]" in html.unescape(
            ui.get(done.headers["location"]).text
        )
        url = api.ok("GET", f"/api/actions/{ids['action']}")["settings"]["url"]
        assert url == "https://ads.example/in?town=[#UPPER TOWN#]&c=[#TOWN#]"
        detail = {"name": "Town", "shortcode_key": "town", "update_templates": True}
        assert audit_actions(api.engine) == [
            ("field.update", EDITOR, str(ids["city"]), detail | {"updated_actions": [ids["action"]]})
        ]


def test_choices_and_field_deletion(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        page = ui.get("/lists").text
        assert ">free\npro</textarea>" in page

        ok = ui.post(
            f"/fields/{ids['plan']}",
            {"name": "Plan", "shortcode_key": "PLAN", "choices": "free\npro\nteam\n"},
        )
        assert ok.status_code == 303
        fields = {f["id"]: f for f in api.ok("GET", f"/api/lists/{ids['list']}/fields")}
        assert fields[ids["plan"]]["choices"] == ["free", "pro", "team"]
        empty = ui.post(f"/fields/{ids['plan']}", {"name": "Plan", "shortcode_key": "PLAN", "choices": " \n"})
        assert error_of(empty.text, f"field-{ids['plan']}") == "a choice field needs at least one choice"

        used = ui.post(f"/fields/{ids['city']}/delete", {"confirm": "yes"})
        assert used.status_code == 422
        message = error_of(used.text, f"delete-field-{ids['city']}")
        assert message.startswith("field 'City' is used by the conditions of automation 'Paris customers'")
        assert f"the URL of action #{ids['action']}" in message

        assert ui.post(f"/fields/{ids['note']}/delete", {"confirm": "yes"}).status_code == 303
        assert ids["note"] not in {f["id"] for f in api.ok("GET", f"/api/lists/{ids['list']}/fields")}
        assert [(a, t) for a, _, t, _ in audit_actions(api.engine)] == [
            ("field.update", str(ids["plan"])),
            ("field.delete", str(ids["note"])),
        ]


def test_a_viewer_sees_no_edit_form(db_url: str) -> None:
    with setup(db_url) as (api, _ui, ids):
        person(api.engine, "vi@example.com", account_id=api.account_id, role="viewer")
        with closing(sign_in(api.base_url, "vi@example.com")) as viewer:
            page = viewer.get("/lists").text
            assert "Rename or delete the list" not in page
            assert f'id="field-{ids["city"]}"' not in page
            assert viewer.post(f"/fields/{ids['city']}", {"name": "X"}).status_code == 403
