"""Forms that keep what was typed and confirmations that count, over real HTTP (SQLite and PostgreSQL).

A refused action, automation or new-field form comes back (422) with every input as typed and one
plain error beside the input it concerns; turning an automation on, cancelling a delivery, recovering
failed deliveries and rotating a secret first answer a page that says what will happen, with its
count, and change (and audit) nothing until confirmed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import sqlalchemy as sa

from contactsync.db.platform import actions, deliveries
from support.api import Api, api_client, automation_with_action
from support.web import Ui, audit_actions, person, sign_in

EDITOR = "ed@example.com"


@contextmanager
def setup(db_url: str) -> Iterator[tuple[Api, Ui, dict[str, Any]]]:
    """A list with one contact, an automation on contact.created with an action (so one pending
    delivery), and a signed-in editor."""
    with api_client(db_url, session_secret="s", admin_password="an operator's password") as api:
        lst, auto, action = automation_with_action(api, "https://h.example.com/in")
        api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": "a@x.com"})
        person(api.engine, EDITOR, account_id=api.account_id, role="editor")
        with closing(sign_in(api.base_url, EDITOR)) as ui:
            yield api, ui, {"list": lst["id"], "automation": auto["id"], "action": action["id"]}


def form_of(page: str, form_id: str) -> str:
    found = re.search(rf'<form[^>]*id="{form_id}".*?</form>', page, re.S)
    assert found is not None, f"no form {form_id}"
    return found.group(0)


def text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_a_refused_action_form_keeps_every_input_and_shows_one_error_beside_the_url(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        typed = {
            "url": "https://crm.example/in?name=[#PROPER FIRST_NAM#]",
            "method": "GET",
            "content_type": "form",
            "sections": ["fields", "lead-score"],
            "max_items": "7",
            "headers": "X-Api-Key: k-123",
            "date_format": "iso8601",
            "time_zone": "Europe/Paris",
            "delay_s": "60",
            "render": "at_trigger",
            "ordered_per_contact": "on",
        }
        for path in (f"/automations/{ids['automation']}/actions/new", f"/actions/{ids['action']}"):
            refused = ui.post(path, typed)
            assert refused.status_code == 422, path
            page = form_of(refused.text, "action-form")
            error = re.search(r'<pre id="template-error"[^>]*>(.*?)</pre>', page, re.S)
            assert error is not None
            assert "unknown field" in error.group(1)
            assert "line 1, column" in error.group(1)
            assert text(refused.text).count("unknown field") == 1  # once, beside the URL; no flash
            assert "https://crm.example/in?name=[#PROPER FIRST_NAM#]</textarea>" in html.unescape(page)
            assert "<option selected>GET</option>" in page
            assert 'name="max_items" type="number" min="1" max="10000" value="7"' in page
            checked = re.findall(r'name="sections" value="([^"]+)" checked', page)
            assert checked == ["fields", "lead-score"]
            assert ">X-Api-Key: k-123</textarea>" in page
            assert '<option value="iso8601" selected>' in page
            assert 'name="time_zone" value="Europe/Paris"' in page
            assert 'name="delay_s" type="number" min="0" value="60"' in page
            assert '<option value="at_trigger" selected>' in page
            assert 'name="ordered_per_contact" checked' in page
        stored = api.ok("GET", f"/api/actions/{ids['action']}")["settings"]
        assert stored["url"] == "https://h.example.com/in"  # nothing saved
        assert audit_actions(api.engine) == []

        bad_number = ui.post(
            f"/actions/{ids['action']}", {**typed, "url": "https://ok.example/", "max_items": "0"}
        )
        assert bad_number.status_code == 422
        errors = re.findall(r'<span class="input-error">(.*?)</span>', bad_number.text)
        assert errors == ["Input should be greater than or equal to 1"]


def test_a_choice_field_without_choices_keeps_what_was_typed_with_a_plain_error(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        form_id = f"new-field-{ids['list']}"
        typed = {"name": "Plan", "type": "choice", "shortcode_key": "PLAN", "choices": " "}
        refused = ui.post(f"/lists/{ids['list']}/fields", typed)
        assert refused.status_code == 422
        page = form_of(refused.text, form_id)
        assert 'name="name" placeholder="Field name" required value="Plan"' in page
        assert "<option selected>choice</option>" in page
        assert 'value="PLAN"' in page
        errors = re.findall(r'<span class="input-error">(.*?)</span>', page)
        assert [html.unescape(e) for e in errors] == [
            "choices are required for a 'choice' field and only for it"
        ]
        assert "Value error" not in refused.text
        assert text(refused.text).count("choices are required") == 1
        assert ui.post(f"/lists/{ids['list']}/fields", {**typed, "choices": "free, pro"}).status_code == 303
        plan = api.ok("GET", f"/api/lists/{ids['list']}/fields")[-1]
        assert plan["choices"] == ["free", "pro"]


def test_a_refused_automation_form_keeps_what_was_typed(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        typed = {"list_id": str(ids["list"]), "name": "Scored", "trigger": "goal.reached", "ref_id": "12",
                 "conditions": '{"type": "group", "conditions": [{"type": "field", "subject": "lead_score", '
                               '"op": "contains", "value": "x"}]}',
                 "reentry": "per_hours", "reentry_hours": "6"}  # fmt: skip
        refused = ui.post("/automations/new", typed)
        assert refused.status_code == 422
        page = form_of(refused.text, "automation-form")
        assert re.findall(r'<span class="input-error">(.*?)</span>', page) == [
            "operator &#39;contains&#39; does not apply to a number value"
        ]
        assert 'name="name" value="Scored"' in page
        assert '<option value="goal.reached" selected>a contact reaches a goal</option>' in page
        assert 'name="ref_id" type="number" value="12"' in page
        assert 'value="per_hours" checked' in page
        assert 'name="reentry_hours" type="number" min="1" value="6"' in page
        assert "lead_score" in html.unescape(page)
        assert '<details id="advanced" open>' in page  # the JSON it concerns is shown

        made = ui.post("/automations/new", {**typed, "conditions": ""})
        assert made.status_code == 303
        new_id = int(made.headers["location"].split("?")[0].rsplit("/", 1)[1])
        assert api.ok("GET", f"/api/automations/{new_id}")["status"] == "paused"  # a draft


def test_turning_on_shows_the_match_count_and_changes_only_once_confirmed(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        body = {"list_id": ids["list"], "name": "draft", "trigger": {"event": "contact.updated"},
                "status": "paused"}  # fmt: skip
        draft = api.ok("POST", "/api/automations", 201, json=body)["id"]
        api.ok("POST", f"/api/lists/{ids['list']}/contacts", 201, json={"email": "b@x.com"})
        page = ui.get(f"/automations/{draft}")
        assert "Draft — off" in page.text
        assert 'id="turn-on"' in page.text

        asked = ui.post(f"/automations/{draft}/status", {"status": "active"})
        assert asked.status_code == 200
        assert "2 of the list&#39;s 2 contacts match its conditions now." in asked.text
        assert "Turn on (2 contacts match now)" in asked.text
        assert "a contact&#39;s details change" in asked.text
        assert api.ok("GET", f"/api/automations/{draft}")["status"] == "paused"
        assert audit_actions(api.engine) == []

        done = ui.post(f"/automations/{draft}/status", {"status": "active", "confirm": "yes"})
        assert done.status_code == 303
        assert api.ok("GET", f"/api/automations/{draft}")["status"] == "active"
        off = ui.post(f"/automations/{draft}/status", {"status": "paused"})  # turning off: at once
        assert off.status_code == 303
        assert api.ok("GET", f"/api/automations/{draft}")["status"] == "paused"
        assert audit_actions(api.engine) == [
            ("automation.turn_on", EDITOR, str(draft), {"matching": 2}),
            ("automation.turn_off", EDITOR, str(draft), {"matching": 2}),
        ]


def _delivery(api: Api) -> int:
    with api.engine.connect() as conn:
        return int(conn.execute(sa.select(deliveries.c.id)).scalar_one())


def _state(api: Api, delivery_id: int) -> str:
    with api.engine.connect() as conn:
        return str(
            conn.execute(sa.select(deliveries.c.state).where(deliveries.c.id == delivery_id)).scalar_one()
        )


def test_cancel_recover_and_rotate_ask_first_with_their_counts(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        delivery = _delivery(api)
        detail = ui.get(f"/deliveries/{delivery}").text
        assert 'id="cancel">Cancel…' in detail

        asked = ui.post(f"/deliveries/{delivery}/cancel")
        assert asked.status_code == 200
        assert "This cancels 1 delivery to https://h.example.com" in asked.text
        assert _state(api, delivery) == "pending"
        assert ui.post(f"/deliveries/{delivery}/cancel", {"confirm": "yes"}).status_code == 303
        assert _state(api, delivery) == "cancelled"

        with api.engine.begin() as conn:
            conn.execute(deliveries.update().values(state="failed"))
        form = {"action_id": str(ids["action"]), "since": "2000-01-01 00:00"}
        asked = ui.post("/deliveries/recover", form)
        assert asked.status_code == 200
        assert "This re-sends 1 failed delivery of action" in asked.text
        assert "Re-send 1 delivery" in asked.text
        assert _state(api, delivery) == "failed"
        yes = re.search(r'name="since" value="([^"]+)"', asked.text)
        assert yes is not None
        done = ui.post("/deliveries/recover", {**form, "since": yes.group(1), "confirm": "yes"})
        assert done.status_code == 303
        assert _state(api, delivery) == "pending"

        page = ui.get(f"/actions/{ids['action']}").text
        secret_box = re.search(r"<legend>Connect your listener</legend>.*?</fieldset>", page, re.S)
        assert secret_box is not None
        assert 'form="rotate-secret" class="secondary"' in secret_box.group(0)  # inside its box
        with api.engine.connect() as conn:
            before = conn.execute(
                sa.select(actions.c.secret).where(actions.c.id == ids["action"])
            ).scalar_one()
        asked = ui.post(f"/actions/{ids['action']}/rotate")
        assert asked.status_code == 200
        assert "its 1 pending delivery included" in asked.text
        with api.engine.connect() as conn:
            same = conn.execute(sa.select(actions.c.secret).where(actions.c.id == ids["action"])).scalar_one()
        assert same == before
        assert ui.post(f"/actions/{ids['action']}/rotate", {"confirm": "yes"}).status_code == 303
        with api.engine.connect() as conn:
            after = conn.execute(
                sa.select(actions.c.secret).where(actions.c.id == ids["action"])
            ).scalar_one()
        assert after != before
        assert [a[0] for a in audit_actions(api.engine)] == [
            "delivery.cancel",
            "action.recover",
            "action.rotate_secret",
        ]
