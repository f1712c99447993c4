"""Contacts in the admin UI over real HTTP (SQLite and PostgreSQL): create, edit and delete through the
API's service path (automations fire), refusals shown beside the form with what was typed kept, one
audit row per change; and the contact page's explain panel."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

from contactsync.db.platform import contacts, deliveries
from support.api import Api, api_client
from support.web import Ui, audit_actions, person, sign_in

EDITOR = "ed@example.com"


@contextmanager
def setup(db_url: str) -> Iterator[tuple[Api, Ui, dict[str, Any]]]:
    """A list with typed fields, an automation on contact.created and one on contact.updated (each with
    an action, no dispatcher: deliveries stay pending), a manual one on City, and a signed-in editor."""
    with api_client(db_url, session_secret="s", admin_password="an operator's password") as api:
        lst = api.ok("POST", "/api/lists", 201, json={"name": "Customers"})
        lid = lst["id"]
        ids: dict[str, Any] = {"list": lid}
        for name, body in {
            "city": {"name": "City", "type": "text"},
            "age": {"name": "Age", "type": "number"},
            "plan": {"name": "Plan", "type": "choice", "choices": ["free", "pro"]},
            "born": {"name": "Born", "type": "date"},
        }.items():
            ids[name] = api.ok("POST", f"/api/lists/{lid}/fields", 201, json=body)["id"]
        for key, trigger in (
            ("created", {"event": "contact.created"}),
            ("updated", {"event": "contact.updated"}),
        ):
            body = {"list_id": lid, "name": f"on {key}", "trigger": trigger, "reentry": {"policy": "always"}}
            ids[key] = api.ok("POST", "/api/automations", 201, json=body)["id"]
            api.ok(
                "POST", f"/api/automations/{ids[key]}/actions", 201, json={"url": "https://crm.example/in"}
            )
        paris = {
            "list_id": lid,
            "name": "Paris customers",
            "trigger": {"event": "manual"},
            "conditions": {
                "type": "group",
                "op": "and",
                "conditions": [
                    {"type": "field", "subject": "status", "op": "eq", "value": "subscribed"},
                    {"type": "field", "subject": f"field:{ids['city']}", "op": "eq", "value": "Paris"},
                ],
            },
        }
        ids["paris"] = api.ok("POST", "/api/automations", 201, json=paris)["id"]
        api.ok(
            "POST", f"/api/automations/{ids['paris']}/actions", 201, json={"url": "https://ads.example/in"}
        )
        person(api.engine, EDITOR, account_id=api.account_id, role="editor")
        with closing(sign_in(api.base_url, EDITOR)) as ui:
            yield api, ui, ids


def contact(api: Api, ids: dict[str, Any], email: str, **values: str) -> int:
    body = {"email": email, "fields": values}
    return int(api.ok("POST", f"/api/lists/{ids['list']}/contacts", 201, json=body)["contact"]["id"])


def pending_of(api: Api, automation_id: int) -> int:
    return api.count(deliveries, deliveries.c.automation_id == automation_id)


def text_of(page: str) -> str:
    """The page's text, tags dropped and entities decoded (what a reader sees, roughly)."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_the_new_contact_form_offers_each_field_its_input_and_creating_fires_the_automations(
    db_url: str,
) -> None:
    with setup(db_url) as (api, ui, ids):
        form = ui.get(f"/contacts/new?list={ids['list']}")
        assert form.status_code == 200
        assert f'<select name="field:{ids["plan"]}">' in form.text
        assert '<option value="pro">pro</option>' in form.text
        assert f'type="number" name="field:{ids["age"]}"' in form.text
        assert f'type="date" name="field:{ids["born"]}"' in form.text
        done = ui.post(
            "/contacts/new",
            {"list_id": ids["list"], "email": "Ann@Example.com", "phone": "+33 1 23 45 67 89",
             f"field:{ids['city']}": "Lyon", f"field:{ids['plan']}": "pro", f"field:{ids['age']}": "41",
             f"field:{ids['born']}": "1984-02-29"},
        )  # fmt: skip
        assert done.status_code == 303, done.text[:500]
        contact_id = int(done.headers["location"].split("/contacts/")[1].split("?")[0])
        made = api.ok("GET", f"/api/contacts/{contact_id}")
        assert made["email"] == "Ann@Example.com"
        assert {f["name"]: f["value"] for f in made["fields"]} == {
            "City": "Lyon", "Age": "41", "Plan": "pro", "Born": "1984-02-29"
        }  # fmt: skip
        assert pending_of(api, ids["created"]) == 1  # contact.created fired in the same transaction
        assert "1 deliveries queued" in ui.get(done.headers["location"]).text
        assert audit_actions(api.engine, "contact.") == [
            ("contact.upsert", EDITOR, str(contact_id),
             {"created": True, "changed_fields": sorted([ids["city"], ids["age"], ids["plan"], ids["born"]])})
        ]  # fmt: skip


def test_a_refused_new_contact_comes_back_with_the_reason_beside_the_form_and_what_was_typed(
    db_url: str,
) -> None:
    with setup(db_url) as (api, ui, ids):
        typed = {"list_id": ids["list"], "email": "bob@example.com", "phone": "+1 555 0100",
                 f"field:{ids['city']}": "Nantes", f"field:{ids['age']}": "forty"}  # fmt: skip
        refused = ui.post("/contacts/new", typed)
        assert refused.status_code == 422
        assert "Age: &#39;forty&#39; is not a number" in refused.text
        assert 'id="error-contact"' in refused.text
        assert 'value="bob@example.com"' in refused.text
        assert 'value="Nantes"' in refused.text
        assert 'value="+1 555 0100"' in refused.text
        assert 'value="forty"' in refused.text
        assert api.count(contacts) == 0

        bad_email = ui.post("/contacts/new", {"list_id": ids["list"], "email": "not-an-email"})
        assert bad_email.status_code == 422
        assert "is not an email address" in text_of(bad_email.text)

        assert (
            ui.post("/contacts/new", {"list_id": ids["list"], "email": "bob@example.com"}).status_code == 303
        )
        again = ui.post("/contacts/new", {"list_id": ids["list"], "email": "BOB@example.com"})
        assert again.status_code == 422
        assert "BOB@example.com is already in this list" in text_of(again.text)
        assert api.count(contacts) == 1
        assert [a for a, *_ in audit_actions(api.engine)] == ["contact.upsert"]


def test_editing_refuses_a_value_outside_the_choices_then_saves_fires_and_deletes(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        cid = contact(api, ids, "cy@example.com", CITY="Lyon", PLAN="free")
        page = ui.get(f"/contacts/{cid}")
        assert 'id="contact-form"' in page.text
        assert '<option value="free" selected>free</option>' in page.text

        refused = ui.post(
            f"/contacts/{cid}", {f"field:{ids['plan']}": "gold", f"field:{ids['city']}": "Paris"}
        )
        assert refused.status_code == 422
        assert "Plan: &#39;gold&#39; is not one of [&#39;free&#39;, &#39;pro&#39;]" in refused.text
        assert 'value="Paris"' in refused.text  # what was typed, not the stored Lyon
        assert "gold (no longer a choice)" in refused.text  # the typed choice stays selected
        assert api.ok("GET", f"/api/contacts/{cid}")["fields"][0]["value"] == "Lyon"
        assert audit_actions(api.engine) == []

        saved = ui.post(
            f"/contacts/{cid}",
            {"phone": "+33 6 00 00 00 00", "status": "unsubscribed", f"field:{ids['city']}": "Paris",
             f"field:{ids['plan']}": "free"},
        )  # fmt: skip
        assert saved.status_code == 303
        got = api.ok("GET", f"/api/contacts/{cid}")
        assert (got["phone"], got["status"]) == ("+33 6 00 00 00 00", "unsubscribed")
        assert {f["name"]: f["value"] for f in got["fields"]} == {"City": "Paris", "Plan": "free"}
        assert pending_of(api, ids["updated"]) == 1  # contact.updated fired

        cleared = ui.post(
            f"/contacts/{cid}", {"phone": "", f"field:{ids['city']}": "", f"field:{ids['plan']}": "free"}
        )
        assert cleared.status_code == 303
        got = api.ok("GET", f"/api/contacts/{cid}")
        assert got["phone"] == ""
        assert {f["name"] for f in got["fields"]} == {"Plan"}

        unconfirmed = ui.post(f"/contacts/{cid}/delete")
        assert "confirm" in unconfirmed.headers["location"]
        assert api.get(f"/api/contacts/{cid}").status_code == 200
        gone = ui.post(f"/contacts/{cid}/delete", {"confirm": "yes"})
        assert gone.status_code == 303
        assert gone.headers["location"].startswith(f"/contacts?list={ids['list']}")
        assert api.get(f"/api/contacts/{cid}").status_code == 404
        assert [(a, who, t) for a, who, t, _ in audit_actions(api.engine)] == [
            ("contact.update", EDITOR, str(cid)),
            ("contact.update", EDITOR, str(cid)),
            ("contact.delete", EDITOR, str(cid)),
        ]


def test_the_explain_panel_shows_each_condition_with_the_contact_value_the_gate_and_deliveries(
    db_url: str,
) -> None:
    with setup(db_url) as (api, ui, ids):
        lyon = contact(api, ids, "lyon@example.com", CITY="Lyon")
        paris = contact(api, ids, "paris@example.com", CITY="Paris")

        page = ui.get(f"/contacts/{lyon}")
        assert page.status_code == 200
        panel = panel_of(page.text, ids["paris"])
        assert "Only when someone runs it over the list (manual)." in panel
        assert "City is “Paris” “Lyon” ✗ fails" in panel
        assert "Status is “subscribed” “subscribed” ✓ passes" in panel
        assert "all of these hold ✗ fails" in panel
        assert "No: it needs City is “Paris”, and this contact has “Lyon”." in panel
        assert "Last entry: never" in panel
        created = panel_of(page.text, ids["created"])
        assert "When the contact is created." in created
        assert "No conditions: every contact of the list matches." in created
        assert re.search(r"#\d+ waiting", created)  # its delivery for the contact, linked
        assert 'href="/deliveries/' in page.text

        before = ui.get(f"/contacts/{paris}").text
        assert "Yes: the contact would enter on the next manual run." in panel_of(before, ids["paris"])
        run = api.ok("POST", f"/api/automations/{ids['paris']}/runs", 202)
        for _ in range(300):
            if api.ok("GET", f"/api/runs/{run['id']}")["state"] == "completed":
                break
            time.sleep(0.05)
        after = panel_of(ui.get(f"/contacts/{paris}").text, ids["paris"])
        assert "No: the contact already went through, and this automation lets a contact in once." in after
        assert "The contact already went through; only a resend on purpose" in after
        assert "Last entry: never" not in after
        assert re.search(r"#\d+ waiting", after)
        assert audit_actions(api.engine) == []  # reading explains nothing into the audit log


def panel_of(page: str, automation_id: int) -> str:
    found = re.search(rf'<article class="card explain" id="explain-{automation_id}".*?</article>', page, re.S)
    assert found is not None, page[:3000]
    return text_of(found.group(0))
