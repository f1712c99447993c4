"""People in real Chromium: an owner adds a viewer, who signs in with the one-time password, reads the
account's automations and cannot change one (no control to do it, and a forced POST answers 403)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from contactsync.automation.automations import get_automation
from support.browser import OWNER, PASSWORD, Stack, login

if TYPE_CHECKING:
    from playwright.sync_api import Page


pytestmark = pytest.mark.browser

VIEWER = "new.viewer@example.com"


def test_an_owner_adds_a_viewer_who_reads_the_automations_but_cannot_save_an_edit(
    page: Page, stack: Stack
) -> None:
    base = stack.platform_url
    login(page, base, OWNER, PASSWORD)
    assert page.locator("#my-role").inner_text() == "owner"
    page.click("text=Members")
    form = page.locator("#add-member")
    form.locator("input[name=email]").fill(VIEWER)
    form.locator("select[name=role]").select_option("viewer")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#member-added")
    password = page.locator("#one-time-password").inner_text().strip()
    assert len(password) >= 12
    assert page.locator(f"#members tr[data-email='{VIEWER}']").count() == 1
    page.click("text=Audit log")
    assert page.locator("#audit tbody tr").first.inner_text().split("\t")[1].startswith(OWNER)
    assert "member.add" in page.locator("#audit tbody tr").first.inner_text()
    page.click("text=Log out")
    page.wait_for_selector("input[name=email]")

    login(page, base, VIEWER, password)
    assert page.locator("#my-role").inner_text() == "viewer"
    assert page.locator("#my-account").inner_text() == "Test"
    assert page.locator("header nav >> text=Members").count() == 0  # owners only
    page.click("header nav >> text=Automations")
    assert page.locator("#new-automation").count() == 0
    page.click("text=Seeded")
    page.wait_for_selector("h1:has-text('Seeded')")
    automation_id = stack.ids["automation"]
    assert page.url.endswith(f"/automations/{automation_id}")
    assert page.locator("#save-automation").count() == 0
    assert page.locator("input[name=name]").is_disabled()
    assert page.locator("#read-only").inner_text().startswith("Your role in Test is viewer")
    assert page.locator("#add-action").count() == 0
    page.goto(f"{base}/actions/{stack.ids['action']}")
    assert page.locator("#save-action").count() == 0
    assert page.locator("#reveal-secret").count() == 0
    assert page.locator("#test-send-button").count() == 0

    # the server refuses the edit all the same, whatever the page offered
    csrf = page.locator("body").get_attribute("data-csrf")
    assert csrf is not None
    forced = page.context.request.post(
        f"{base}/automations/{automation_id}",
        form={"csrf_token": csrf, "name": "Renamed by a viewer", "trigger": "manual"},
        max_redirects=0,
    )
    assert forced.status == 403
    assert "Your role in Test is viewer; ask an owner." in forced.text()
    with stack.engine.connect() as conn:
        assert get_automation(conn, automation_id).name == "Seeded"
