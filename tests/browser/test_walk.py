"""The whole task a marketing-operations person does, in real Chromium, as they would do it.

Create a list and its fields, add contacts by hand, build the automation in words (a draft, turned on
after the count), add the sync action and pair it with the listener — first with a wrongly pasted
secret, whose refused test send says why in words, then with the right one — see the contact arrive
in the listener under the automation's name, then break the endpoint and see the dashboard and the
automation turn red.

Every step is screenshotted to ``test-artifacts/walk-NN-*.png``. With ``CONTACTSYNC_SCREENSHOTS=docs/img``
the README tour's pictures are also written there (``dashboard.png``, ``action.png``, ``delivery.png``,
``listener.png``, ``builder.png``, ``pairing.png``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from contactsync.db.platform import actions, automations, contacts, deliveries, lists
from contactsync.wire.signing import generate_secret
from support.browser import ARTIFACTS, OWNER, PASSWORD, Stack, login
from support.ports import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Page


pytestmark = pytest.mark.browser

README_SHOTS = os.environ.get("CONTACTSYNC_SCREENSHOTS")
AUTOMATION = "Pro customers → CRM"
ACTION = "To the CRM"
SENDER = f"{AUTOMATION} · {ACTION}"
"""How the listener names requests of this action (wire/sender.py), and the label to pair it under."""


class Camera:
    """Numbered screenshots of the walk, and the README's copies when asked for."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.n = 0

    def __call__(self, name: str, readme: str | None = None) -> None:
        self.n += 1
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"walk-{self.n:02d}-{name}.png"), full_page=True)
        if readme and README_SHOTS:
            Path(README_SHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(README_SHOTS) / readme), full_page=True)


def _until(page: Page, check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Reload until ``check`` holds: what the dispatcher and listener do happens in the background."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
        page.reload()


def _one(stack: Stack, query: Any) -> Any:
    with stack.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def _edit_contact(page: Page, base: str, contact_id: int, first_name: str) -> None:
    page.goto(f"{base}/contacts/{contact_id}")
    page.click("#edit-contact summary")
    form = page.locator("#contact-form")
    form.locator("label", has_text="First Name").locator("input").fill(first_name)
    form.locator("#save-contact").click()
    expect(page.locator("#field-values")).to_contain_text(first_name)


def test_a_marketer_builds_pairs_syncs_and_sees_a_failure(page: Page, stack: Stack) -> None:
    shot = Camera(page)
    base, admin = stack.platform_url, stack.listener_url + "/admin"
    login(page, base, OWNER, PASSWORD)

    # 1. a list and its fields
    page.goto(base + "/lists")
    page.fill("form[action$='/lists'] input[name=name]", "Newsletter")
    page.click("button:has-text('Create list')")
    list_id = _one(stack, sa.select(lists.c.id).where(lists.c.name == "Newsletter"))
    new_field = page.locator(f"#new-field-{list_id}")
    new_field.locator("input[name=name]").fill("First Name")
    new_field.locator("button[type=submit]").click()
    page.wait_for_selector("text=field added")
    new_field = page.locator(f"#new-field-{list_id}")
    new_field.locator("input[name=name]").fill("Plan")
    new_field.locator("select[name=type]").select_option("choice")
    new_field.locator("input[name=choices]").fill("Free, Pro, Team")
    new_field.locator("button[type=submit]").click()
    page.wait_for_selector("text=field added")
    expect(page.locator(f"#list-{list_id}")).to_contain_text("[#PLAN#]")
    shot("list-and-fields")

    # 2. contacts, typed in
    people = {"ana@example.com": ("Ana", "Pro"), "bo@example.com": ("Bo", "Free")}
    ids: dict[str, int] = {}
    for email, (first, plan) in people.items():
        page.goto(f"{base}/contacts/new?list={list_id}")
        form = page.locator("#contact-form")
        form.locator("input[name=email]").fill(email)
        form.locator("label", has_text="First Name").locator("input").fill(first)
        form.locator("label", has_text="Plan").locator("select").select_option(plan)
        form.locator("#save-contact").click()
        page.wait_for_selector("text=contact created")
        ids[email] = int(re.search(r"/contacts/(\d+)", page.url).group(1))  # type: ignore[union-attr]
        expect(page.locator("#field-values")).to_contain_text(plan)
    shot("contact")

    # 3. the automation, in words: when a contact's details change and their plan is Pro
    page.goto(f"{base}/automations/new?list={list_id}")
    page.fill("input[name=name]", AUTOMATION)
    page.select_option("#trigger", "contact.updated")
    expect(page.locator("#trigger option:checked")).to_have_text("a contact's details change")
    builder = page.locator("#builder")
    builder.locator("button", has_text="+ field condition").click()
    row = builder.locator(".cond").nth(0)
    row.locator("select[aria-label=field]").select_option(label="Plan")
    row.locator("select[aria-label=comparison]").select_option(label="is")
    row.locator("select[aria-label=value]").select_option("Pro")
    page.check("input[name=reentry][value=always]")  # every change of hers is synced
    shot("builder", readme="builder.png")
    page.click("#save-automation")
    page.wait_for_selector("text=automation created as a draft")
    automation_id = int(re.search(r"/automations/(\d+)", page.url).group(1))  # type: ignore[union-attr]
    expect(page.locator("#status-words")).to_have_text("Draft — off")
    page.click("#turn-on")
    expect(page.locator("#confirm-count")).to_contain_text("1 of the list's")  # Ana, on the Pro plan
    shot("turn-on")
    page.click("#confirm-yes")
    page.wait_for_selector("text=automation turned on")

    # 4. the sync action, to the listener's private URL
    page.click("#add-action")
    page.fill("#action-name", ACTION)
    page.fill("#url", stack.sync_url)
    page.click("#save-action")
    page.wait_for_selector("text=action saved")
    action_id = int(re.search(r"/actions/(\d+)", page.url).group(1))  # type: ignore[union-attr]
    expect(page.locator("#suggested-label")).to_have_text(SENDER)

    # 5. pairing: a wrongly pasted secret first (an old one, say) ...
    login(page, admin)
    page.goto(admin + "/secrets")
    page.fill("#secret-add input[name=label]", SENDER)
    page.fill("#secret-add input[name=secret]", generate_secret())
    page.click("#secret-add button[type=submit]")
    expect(page.locator("#secrets")).to_contain_text(SENDER)
    page.goto(f"{base}/actions/{action_id}")
    page.fill("#contact_id", str(ids["ana@example.com"]))
    page.click("#test-send-button")
    page.locator("#test-send-hint:not(:empty)").wait_for()
    expect(page.locator("#test-send-meta")).to_contain_text("Failed: HTTP 401")
    expect(page.locator("#test-send-hint")).to_have_text(
        "The listener does not know this action's secret — add it under Secrets on the listener "
        "(copy it from “Connect your listener” on this page)."
    )
    shot("test-send-wrong-secret")
    page.goto(admin + "/refused")
    _until(page, lambda: SENDER in page.locator("#refused").inner_text(), "the refusal on the listener")
    shot("listener-refused")

    # ... then the right one, copied from the action's panel
    page.goto(f"{base}/actions/{action_id}")
    page.click("#reveal-secret")
    expect(page.locator("#secret")).not_to_contain_text("•")
    secret = page.locator("#secret").inner_text()
    page.goto(admin + "/secrets")
    page.locator(f"#secrets tr[data-label='{SENDER}'] form.rotate input[name=secret]").fill(secret)
    page.locator(f"#secrets tr[data-label='{SENDER}'] form.rotate button").click()
    expect(page.locator("#secrets")).to_contain_text(SENDER)
    shot("listener-secrets", readme="pairing.png")
    page.goto(f"{base}/actions/{action_id}")
    page.fill("#contact_id", str(ids["ana@example.com"]))
    page.click("#test-send-button")
    page.locator("#test-send-hint:not(:empty)").wait_for()
    expect(page.locator("#test-send-meta")).to_contain_text("Delivered: HTTP 200")
    page.click("#preview-button")
    expect(page.locator("#preview-request")).to_contain_text("contact%5Bemail%5D=ana%40example.com")
    shot("test-send-paired", readme="action.png")

    # 6. Ana changes: the automation sends her, and she arrives in the listener under its name
    _edit_contact(page, base, ids["ana@example.com"], "Ana Maria")
    _edit_contact(page, base, ids["bo@example.com"], "Bob")  # on the Free plan: not sent
    page.goto(admin + "/")
    _until(page, lambda: _rows_of(page, "ana@example.com") >= 2, "Ana's sync on the listener")
    rows = page.locator("#syncs tbody tr", has_text="ana@example.com")
    expect(rows.first).to_contain_text(SENDER)
    expect(page.locator("#syncs")).not_to_contain_text("bo@example.com")
    shot("listener-received", readme="listener.png")
    rows.first.locator("td.contact a").click()
    expect(page.locator("body")).to_contain_text("Ana Maria")  # projected into the listener's tables
    shot("listener-contact")

    page.goto(f"{base}/deliveries?automation={automation_id}")
    expect(page.locator("body")).to_contain_text("ana@example.com")
    page.locator("a[href^='/deliveries/']", has_text=re.compile(r"\d")).first.click()
    expect(page.locator("body")).to_contain_text(f"{AUTOMATION} · {ACTION}")
    expect(page.locator("body")).to_contain_text("Ana Maria")  # the body as a table of keys and values
    shot("delivery", readme="delivery.png")

    # 7. the endpoint breaks: the dashboard and the automation turn red
    page.goto(f"{base}/actions/{action_id}")
    page.fill("#url", f"http://127.0.0.1:{free_port()}/sync")
    page.click("#save-action")
    page.wait_for_selector("text=action saved")
    _edit_contact(page, base, ids["ana@example.com"], "Ana M.")
    page.goto(base + "/")
    _until(page, lambda: page.locator("#retrying-banner").count() > 0, "the retrying banner")
    expect(page.locator("#retrying-banner")).to_contain_text("1 delivery is retrying")
    troubles = page.locator("#troubles")
    expect(troubles).to_contain_text(AUTOMATION)
    expect(troubles).to_contain_text(ACTION)
    expect(troubles).to_contain_text("could not connect")
    expect(page.locator("#tile-retrying")).to_have_class(re.compile(r"\balarm\b"))
    shot("dashboard-failing", readme="dashboard.png")
    page.goto(base + "/automations")
    expect(page.locator("td.health-cell[data-level='failing']")).to_have_count(1)
    page.goto(f"{base}/automations/{automation_id}")
    expect(page.locator("#health")).to_have_class(re.compile(r"\bbad\b"))
    expect(page.locator("#health")).to_contain_text("1 retrying")
    shot("automation-failing")

    with stack.engine.connect() as conn:
        states: dict[str, int] = dict(
            conn.execute(
                sa.select(deliveries.c.state, sa.func.count())
                .where(deliveries.c.automation_id == automation_id)
                .group_by(deliveries.c.state)
            ).all()
        )
        named = conn.execute(sa.select(actions.c.settings).where(actions.c.id == action_id)).scalar_one()
        assert (
            conn.execute(
                sa.select(automations.c.status).where(automations.c.id == automation_id)
            ).scalar_one()
            == "active"
        )
        assert (
            conn.execute(
                sa.select(sa.func.count()).select_from(contacts).where(contacts.c.list_id == list_id)
            ).scalar_one()
            == 2
        )
    assert states == {"delivered": 1, "pending": 1}
    assert named["name"] == ACTION


def _rows_of(page: Page, email: str) -> int:
    """Syncs of ``email`` on the listener's page (the paired test send carried her too)."""
    return int(page.locator("#syncs tbody tr", has_text=email).count())
