"""Manual runs and resends in the admin UI over real HTTP (SQLite and PostgreSQL): the dry-run count comes
first, nothing starts unconfirmed, a resend ignores re-entry and says so, each start is one audit row;
deleting an automation says how many pending deliveries it cancels."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any
from urllib.parse import unquote

from contactsync.automation.manual import start_run
from contactsync.automation.runtime import Runtime
from contactsync.db.platform import deliveries, manual_runs
from contactsync.settings import Settings
from support.api import Api, api_client
from support.web import Ui, audit_actions, person, sign_in

EDITOR = "ed@example.com"


@contextmanager
def setup(db_url: str) -> Iterator[tuple[Api, Ui, dict[str, Any]]]:
    """A manual automation "City is Paris", re-entry once, with an action (no dispatcher: deliveries
    stay pending); three contacts in Paris and one in Lyon; a signed-in editor."""
    with api_client(db_url, session_secret="s", admin_password="an operator's password") as api:
        lid = api.ok("POST", "/api/lists", 201, json={"name": "Customers"})["id"]
        city = api.ok("POST", f"/api/lists/{lid}/fields", 201, json={"name": "City"})["id"]
        body = {
            "list_id": lid,
            "name": "Paris customers",
            "trigger": {"event": "manual"},
            "conditions": {"type": "group", "op": "and", "conditions": [
                {"type": "field", "subject": f"field:{city}", "op": "eq", "value": "Paris"}]},
        }  # fmt: skip
        auto = api.ok("POST", "/api/automations", 201, json=body)["id"]
        api.ok("POST", f"/api/automations/{auto}/actions", 201, json={"url": "https://ads.example/in"})
        for email, town in (
            ("a@x.com", "Paris"),
            ("b@x.com", "Paris"),
            ("c@x.com", "Paris"),
            ("d@x.com", "Lyon"),
        ):
            api.ok("POST", f"/api/lists/{lid}/contacts", 201, json={"email": email, "fields": {"CITY": town}})
        person(api.engine, EDITOR, account_id=api.account_id, role="editor")
        with closing(sign_in(api.base_url, EDITOR)) as ui:
            yield api, ui, {"list": lid, "automation": auto}


def tile(page: str, name: str) -> int:
    found = re.search(rf'id="{name}">(\d+)<', page)
    assert found is not None, page[-3000:]
    return int(found.group(1))


def finished(ui: Ui, location: str) -> str:
    """The run page once its run completed (it reloads itself while running; a test reads it again)."""
    for _ in range(600):
        page = ui.get(location).text
        if 'data-state="completed"' in page:
            return page
        time.sleep(0.05)
    raise AssertionError(f"the run did not complete: {page[-2000:]}")


def sent(api: Api, automation_id: int) -> int:
    return api.count(deliveries, deliveries.c.automation_id == automation_id)


def test_a_run_shows_its_count_first_and_a_resend_needs_its_own_confirmation(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        auto = ids["automation"]
        page = ui.get(f"/automations/{auto}")
        assert f'href="/automations/{auto}/run"' in page.text
        assert f'href="/automations/{auto}/resend"' in page.text

        dry = ui.get(f"/automations/{auto}/run").text
        assert (tile(dry, "dry-total"), tile(dry, "dry-matching"), tile(dry, "dry-would-enter")) == (4, 3, 3)
        assert all(e in dry for e in ("a@x.com", "b@x.com", "c@x.com"))
        assert "d@x.com" not in dry
        assert "Start the run: 3 contacts enter" in dry

        unconfirmed = ui.post(f"/automations/{auto}/run")
        assert unconfirmed.status_code == 303
        assert unquote(unconfirmed.headers["location"]).startswith(
            f"/automations/{auto}/run?err=tick the box"
        )
        assert api.count(manual_runs) == 0

        started = ui.post(f"/automations/{auto}/run", {"confirm": "yes"})
        assert started.status_code == 303
        location = started.headers["location"].split("?")[0]
        assert re.fullmatch(r"/runs/\d+", location)
        run_page = finished(ui, location)
        assert "a run that respects re-entry" in run_page
        assert re.search(r'id="run-enqueued">3 deliveries<', run_page)
        assert sent(api, auto) == 3

        again = ui.get(f"/automations/{auto}/run").text  # re-entry "once" keeps them out now
        assert (tile(again, "dry-matching"), tile(again, "dry-would-enter")) == (3, 0)
        resend = ui.get(f"/automations/{auto}/resend").text
        assert 'data-ignore-reentry="true"' in resend
        assert (tile(resend, "dry-would-enter"), tile(resend, "dry-normal")) == (3, 0)
        assert "including 3 who already went through" in resend
        assert 'name="confirm" value="yes" required' in resend  # an explicit tick, not a hidden field

        refused = ui.post(f"/automations/{auto}/resend")
        assert "err=" in refused.headers["location"]
        assert api.count(manual_runs) == 1

        resent = ui.post(f"/automations/{auto}/resend", {"confirm": "yes"})
        assert "resend (ignoring re-entry)" in unquote(resent.headers["location"])
        second = resent.headers["location"].split("?")[0]
        resend_page = finished(ui, second)
        assert "a resend on purpose: ignores re-entry" in resend_page
        assert sent(api, auto) == 6
        runs = api.ok("GET", f"/api/automations/{auto}/runs")
        assert [r["ignore_reentry"] for r in runs] == [False, True]
        assert "resend (ignores re-entry)" in ui.get(f"/automations/{auto}").text
        assert audit_actions(api.engine) == [
            ("run.start", EDITOR, str(runs[0]["id"]), {"automation_id": auto}),
            ("run.resend", EDITOR, str(runs[1]["id"]), {"automation_id": auto}),
        ]


def test_a_paused_automation_offers_no_start_and_refuses_one(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        auto = ids["automation"]
        current = api.ok("GET", f"/api/automations/{auto}")
        api.ok("PUT", f"/api/automations/{auto}", json={k: current[k] for k in
               ("list_id", "name", "trigger", "conditions", "reentry")} | {"status": "paused"})  # fmt: skip
        page = ui.get(f"/automations/{auto}/resend").text
        assert "The automation is off (a draft)" in page
        assert 'id="confirm-resend"' not in page
        refused = ui.post(f"/automations/{auto}/resend", {"confirm": "yes"})
        assert "the automation is paused" in unquote(refused.headers["location"])
        assert api.count(manual_runs) == 0
        assert audit_actions(api.engine) == []


def test_a_start_while_a_run_is_running_leads_to_that_run(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        auto = ids["automation"]
        rt = Runtime.create(Settings(database_url=str(api.engine.url)), engine=api.engine)
        with api.engine.begin() as conn:  # started elsewhere, not processed yet
            running = start_run(conn, rt, auto)
        answer = ui.post(f"/automations/{auto}/run", {"confirm": "yes"})
        assert unquote(answer.headers["location"]).startswith(f"/runs/{running.id}?err=")
        finished(ui, f"/runs/{running.id}")  # the page's server picked the orphan up
        assert api.count(manual_runs) == 1
        assert audit_actions(api.engine) == []


def test_deleting_an_automation_says_how_many_pending_deliveries_it_cancels(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        auto = ids["automation"]
        run = api.ok("POST", f"/api/automations/{auto}/runs", 202)["id"]
        finished(ui, f"/runs/{run}")
        page = ui.get(f"/automations/{auto}").text
        assert "and cancel its 3 pending deliveries" in page
        unconfirmed = ui.post(f"/automations/{auto}/delete")
        assert "confirm" in unquote(unconfirmed.headers["location"])
        assert api.get(f"/api/automations/{auto}").status_code == 200
        done = ui.post(f"/automations/{auto}/delete", {"confirm": "yes"})
        assert unquote(done.headers["location"]) == (
            "/automations?msg=automation 'Paris customers' deleted; 3 pending deliveries cancelled"
        )
        assert api.get(f"/api/automations/{auto}").status_code == 404
        assert {d["state"] for d in api.ok("GET", "/api/deliveries")["items"]} == {"cancelled"}
        assert audit_actions(api.engine) == [
            ("automation.delete", EDITOR, str(auto), {"name": "Paris customers", "cancelled": 3})
        ]
