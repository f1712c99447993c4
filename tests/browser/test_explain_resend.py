"""A marketer in real Chromium: why did this contact not sync (the explain panel, with the contact's own
value beside the failing condition), then a resend on purpose (the dry-run count, an explicit
confirmation, the run completing and its deliveries reaching the listener).

The test also takes the README tour's two screenshots; they are written to ``test-artifacts/`` or, with
``CONTACTSYNC_SCREENSHOTS=docs/img``, where the README finds them (``explain.png``, ``resend.png``).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from contactsync.automation.action_settings import SyncActionSettings
from contactsync.automation.actions import create_action
from contactsync.automation.automations import AutomationIn, create_automation
from contactsync.automation.contacts import ContactIn, find_contact, upsert_contact
from contactsync.automation.lists import list_fields
from contactsync.db.platform import deliveries
from support.browser import ARTIFACTS, OWNER, PASSWORD, Stack, login

if TYPE_CHECKING:
    from playwright.sync_api import Page


pytestmark = pytest.mark.browser

SHOTS = Path(os.environ.get("CONTACTSYNC_SCREENSHOTS") or ARTIFACTS)
PARISIANS = ("amelie@example.com", "bastien@example.com", "chloe@example.com")


def _paris_automation(stack: Stack) -> tuple[int, int]:
    """A manual automation "City is Paris", re-entry once, syncing to the listener; three Parisians."""
    rt = stack.runtime
    now = rt.clock()
    with stack.engine.begin() as conn:
        city = next(f.id for f in list_fields(conn, stack.ids["list"]) if f.name == "City")
        for email in PARISIANS:
            upsert_contact(
                conn, ContactIn(list_id=stack.ids["list"], email=email, fields={"CITY": "Paris"}), now=now
            )
        auto = create_automation(
            conn,
            rt,
            AutomationIn.model_validate(
                {
                    "list_id": stack.ids["list"],
                    "name": "Paris customers → ad audience",
                    "trigger": {"event": "manual"},
                    "conditions": {
                        "type": "group",
                        "op": "and",
                        "conditions": [
                            {"type": "field", "subject": "status", "op": "eq", "value": "subscribed"},
                            {"type": "field", "subject": f"field:{city}", "op": "eq", "value": "Paris"},
                        ],
                    },
                    "reentry": {"policy": "once"},
                }
            ),
        )
        create_action(conn, rt, automation_id=auto.id, settings=SyncActionSettings(url=stack.sync_url))
    return auto.id, city


def _completed(page: Page) -> None:
    """Wait for the run page to show its run completed (the page reloads itself while it runs)."""
    for _ in range(300):
        page.reload()
        if page.locator("#run").get_attribute("data-state") == "completed":
            return
        time.sleep(0.1)
    raise AssertionError("the run did not complete")


def test_the_explain_panel_shows_the_failing_value_then_a_confirmed_resend_completes(
    page: Page, stack: Stack
) -> None:
    base = stack.platform_url
    auto, city = _paris_automation(stack)
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, base, OWNER, PASSWORD)

    # Jane moves to Lyon: edit her through the contact form
    page.goto(f"{base}/contacts/{stack.ids['jane']}")
    page.click("#edit-contact summary")
    page.fill(f"[name='field:{city}']", "Lyon")
    page.click("#save-contact")
    page.wait_for_selector("text=contact saved")
    assert page.locator("#field-values").inner_text().count("Lyon") == 1

    # … so the Paris automation would not take her: the panel says which condition, and her value
    panel = page.locator(f"#explain-{auto}")
    failing = panel.locator("table.conditions tr.fail", has_text="City is “Paris”")
    expect(failing.locator("td.actual")).to_have_text("“Lyon”")
    expect(failing.locator("td.mark")).to_have_text("✗ fails")
    passing = panel.locator("table.conditions tr.pass", has_text="Status is “subscribed”")
    expect(passing.locator("td.mark")).to_have_text("✓ passes")
    expect(panel.locator(".verdict")).to_have_text(
        "No: it needs City is “Paris”, and this contact has “Lyon”."
    )
    expect(panel.locator(".trigger")).to_have_text("Only when someone runs it over the list (manual).")
    SHOTS.mkdir(parents=True, exist_ok=True)
    panel.screenshot(path=str(SHOTS / "explain.png"))

    # a first run over the list: its count first, then the run
    page.goto(f"{base}/automations/{auto}")
    page.click("#run-over-list")
    expect(page.locator("#dry-would-enter")).to_have_text("3")
    page.click("#start")
    expect(page.locator("#run-kind")).to_contain_text("respects re-entry")
    _completed(page)

    # the CRM lost the data: resend to everyone who matches now
    page.goto(f"{base}/automations/{auto}")
    page.click("#resend")
    expect(page.locator("#dry-matching")).to_have_text("3")
    expect(page.locator("#dry-would-enter")).to_have_text("3")
    expect(page.locator("#dry-normal")).to_have_text("0")  # a normal run would send nothing now
    expect(page.locator("#resend-warning")).to_contain_text("including 3 who already went through")
    for email in PARISIANS:
        expect(page.locator("#dry-sample")).to_contain_text(email)
    page.locator("main").screenshot(path=str(SHOTS / "resend.png"))
    confirm_url = page.url
    page.click("#start")  # unticked: the browser keeps the form (and nothing starts)
    assert page.url == confirm_url
    page.check("#confirm-box")
    page.click("#start")
    expect(page.locator("#run-kind")).to_contain_text("ignores re-entry")
    _completed(page)
    expect(page.locator("#run-enqueued")).to_have_text("3 deliveries")

    def delivered() -> int:
        with stack.engine.connect() as conn:
            query = sa.select(sa.func.count()).where(
                deliveries.c.automation_id == auto, deliveries.c.state == "delivered"
            )
            return int(conn.execute(query).scalar_one())

    for _ in range(300):
        if delivered() == 6:
            break
        time.sleep(0.1)
    assert delivered() == 6  # three from the run, the same three again from the resend

    # the panel of a Parisian now names the deliveries and the closed gate
    with stack.engine.connect() as conn:
        amelie = find_contact(conn, list_id=stack.ids["list"], email=PARISIANS[0])
    page.goto(f"{base}/contacts/{amelie}")
    panel = page.locator(f"#explain-{auto}")
    expect(panel.locator(".verdict")).to_have_text(
        "No: the contact already went through, and this automation lets a contact in once."
    )
    expect(panel.locator(".deliveries-of a")).to_have_count(2)
    assert re.search(r"delivered", panel.locator(".deliveries-of").inner_text())
