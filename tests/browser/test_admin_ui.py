"""The admin UI in real Chromium: the operator's journey from login to a projected contact."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from contactsync.automation.actions import get_action
from contactsync.automation.freezing import payload_options
from contactsync.automation.payload_builder import build
from contactsync.db.listener import inbox
from contactsync.db.platform import deliveries
from support.browser import OPERATOR, PASSWORD, Stack, login

if TYPE_CHECKING:
    from playwright.sync_api import Page


pytestmark = pytest.mark.browser


def wait_until(check: Any, *, timeout_s: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy (for work the dispatcher does in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_login_refuses_a_wrong_password_then_accepts_the_right_one(page: Page, stack: Stack) -> None:
    page.goto(stack.platform_url + "/deliveries")
    assert "/login" in page.url
    page.fill("input[name=email]", OPERATOR)
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert page.locator("text=Wrong email or password.").is_visible()
    page.fill("input[name=email]", OPERATOR)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Deliveries')")  # back where the login started
    cookie = next(c for c in page.context.cookies() if c["name"] == "contactsync_platform_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"


def test_a_template_typo_shows_its_line_and_column(page: Page, stack: Stack) -> None:
    login(page, stack.platform_url)
    page.goto(f"{stack.platform_url}/automations/{stack.ids['automation']}/actions/new")
    page.fill("#url", "https://crm.example/hook?name=[#PROPER FIRST_NAM#]")
    error = page.locator("#template-error")
    error.wait_for(state="visible")
    text = error.inner_text()
    assert text.startswith("line 1, column 40: unknown field")
    assert "FIRST_NAME" in text  # the suggestion
    assert text.splitlines()[-1] == " " * 39 + "^"  # the caret sits under the bad name
    page.fill("#url", "https://crm.example/hook?name=[#PROPER FIRST_NAME#]")
    page.locator("#template-ok").wait_for(state="visible")
    assert not error.is_visible()


def test_preview_shows_the_exact_body(page: Page, stack: Stack) -> None:
    login(page, stack.platform_url)
    page.goto(f"{stack.platform_url}/actions/{stack.ids['action']}")
    page.fill("#contact_id", str(stack.ids["jane"]))
    page.click("#preview-button")
    page.locator("#preview-meta:not(:empty)").wait_for()
    shown = page.locator("#preview-request").inner_text()
    meta = page.locator("#preview-meta").inner_text()
    tid = int(re.search(r"webhook-id: (\d+)", shown).group(1))  # type: ignore[union-attr]
    with stack.engine.connect() as conn:
        action = get_action(conn, stack.ids["action"])
        rendered = build(
            conn,
            [stack.ids["jane"]],
            options=payload_options(action.settings, stack.runtime),
            transactionids={stack.ids["jane"]: tid},
        )[stack.ids["jane"]]
    body = rendered.payload.to_form()
    assert shown.startswith(f"POST {stack.sync_url}?first=jane\n")
    assert shown.endswith("\n\n" + body)
    assert "contact%5Bemail%5D=jane.doe%40example.com" in body
    assert f"{len(body)} bytes" in meta
    assert "PHP variables" in meta


def _new_manual_automation(page: Page, stack: Stack, name: str, *, reentry: str = "") -> int:
    """Create an automation with the manual trigger through the form; its id."""
    page.goto(stack.platform_url + "/automations")
    page.click("#new-automation")
    page.fill("input[name=name]", name)
    page.select_option("select[name=trigger]", "manual")
    if reentry:
        page.check(f"input[name=reentry][value={reentry}]")
    page.click("#save-automation")
    page.wait_for_selector("text=automation created")
    automation_id = int(re.search(r"/automations/(\d+)", page.url).group(1))  # type: ignore[union-attr]
    page.click("#turn-on")  # a new automation is a draft: turned on after its count is shown
    page.click("#confirm-yes")
    page.wait_for_selector("text=automation turned on")
    return automation_id


def test_journey_create_action_test_send_deliver_retry_and_listener_shows_the_contact(
    page: Page, stack: Stack
) -> None:
    login(page, stack.platform_url)
    # a new automation with a sync action, through the forms
    automation_id = _new_manual_automation(page, stack, "Sync customers to the CRM", reentry="always")
    page.click("#add-action")
    page.fill("#url", stack.sync_url + "?city=[#UPPER CITY#]")
    page.locator("#template-ok").wait_for(state="visible")
    page.uncheck("input[name=sections][value=pages-visited]")
    page.fill("input[name=max_items]", "5")
    page.fill("textarea[name=headers]", "X-Api-Key: demo-123")
    page.click("#save-action")
    page.wait_for_selector("text=action saved")
    action_id = int(re.search(r"/actions/(\d+)", page.url).group(1))  # type: ignore[union-attr]
    assert page.locator("#secret").inner_text().startswith("whsec_••••••••")  # a masked hint
    page.click("#reveal-secret")  # fetched on demand: the page never carries the secret
    expect(page.locator("#secret")).not_to_contain_text("•")
    revealed = page.locator("#secret").inner_text()
    assert revealed.startswith("whsec_")
    assert "•" not in revealed

    # test send: one real attempt to the local listener, answer shown
    page.fill("#contact_id", str(stack.ids["jane"]))
    page.click("#test-send-button")
    page.locator("#test-send-meta:not(:empty)").wait_for()
    assert page.locator("#test-send-meta").inner_text().startswith("Delivered: HTTP 200")
    answer = page.locator("#test-send-response").inner_text()
    tid = re.search(r'"transactionid":"(\d+)"', answer).group(1)  # type: ignore[union-attr]
    with stack.listener_engine.connect() as conn:
        assert conn.execute(sa.select(inbox.c.id).where(inbox.c.transactionid == tid)).first() is not None

    # a manual run queues one delivery per contact; the dispatcher sends them
    page.goto(f"{stack.platform_url}/automations/{automation_id}")
    page.click("#run-over-list")
    expect(page.locator("#dry-would-enter")).to_have_text("2")  # the dry run's count comes first
    page.click("#start")
    page.wait_for_selector("text=manual run")

    def delivered() -> list[int]:
        with stack.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(deliveries.c.id).where(
                        deliveries.c.action_id == action_id, deliveries.c.state == "delivered"
                    )
                ).scalars()
            )

    done = wait_until(lambda: len(delivered()) == 2 and delivered())
    assert done, "the manual run's deliveries were not delivered"
    page.goto(f"{stack.platform_url}/deliveries?action={action_id}")
    page.click(f"a[href$='/deliveries/{done[0]}']")
    page.wait_for_selector("text=Attempt 1")
    assert "HTTP 200" in page.locator(".attempt").first.inner_text()
    frozen = page.locator("#request").inner_text()
    assert "X-Api-Key: ••••••••" in frozen  # a credential, sealed at rest: never shown here
    assert "demo-123" not in frozen

    # retry: a second attempt with the same transactionid
    page.click("#retry")
    page.wait_for_selector("text=queued for a new attempt")
    for _ in range(100):
        page.reload()
        if page.locator(".attempt").count() == 2:
            break
        time.sleep(0.2)
    assert page.locator(".attempt").count() == 2
    assert "HTTP 200" in page.locator(".attempt").nth(1).inner_text()

    # the listener's own dashboard shows the contact
    login(page, stack.listener_url + "/admin")
    page.goto(stack.listener_url + "/admin/contacts")
    for _ in range(100):
        if page.locator("text=jane.doe@example.com").count():
            break
        time.sleep(0.2)
        page.reload()
    assert page.locator("text=jane.doe@example.com").count() >= 1
    page.click("text=jane.doe@example.com >> xpath=ancestor::tr//a")
    page.wait_for_selector("h1:has-text('Synced contact')")
    assert page.locator("td.value", has_text="jane").count() >= 1


def test_condition_builder_writes_the_rule_the_service_stores(page: Page, stack: Stack) -> None:
    from contactsync.automation.automations import get_automation

    login(page, stack.platform_url)
    page.goto(f"{stack.platform_url}/automations/new?list={stack.ids['list']}")
    page.fill("input[name=name]", "Warm Paris leads")
    page.select_option("select[name=trigger]", "contact.updated")
    builder = page.locator("#builder")
    builder.locator("button", has_text="+ field condition").click()
    row = builder.locator(".cond").nth(0)
    row.locator("select").nth(0).select_option(f"field:{stack.ids['field']}")
    row.locator("select").nth(1).select_option("eq")
    row.locator("input").fill("jane")
    builder.locator("button", has_text="+ activity condition").click()
    activity = builder.locator(".cond").nth(1)
    activity.locator("select").select_option("page_visit")
    activity.locator("input").nth(0).fill("pricing")
    activity.locator("input").nth(2).fill("30")
    builder.locator("select").first.select_option("or")
    page.check("input[name=reentry][value=per_hours]")
    page.fill("input[name=reentry_hours]", "6")
    page.click("#save-automation")
    page.wait_for_selector("text=automation created")
    automation_id = int(re.search(r"/automations/(\d+)", page.url).group(1))  # type: ignore[union-attr]
    with stack.engine.connect() as conn:
        saved = get_automation(conn, automation_id)
    assert saved.trigger.event == "contact.updated"
    assert saved.reentry.policy == "per_hours"
    assert saved.reentry.hours == 6
    assert saved.conditions is not None
    assert saved.conditions.model_dump(mode="json", exclude_defaults=True) == {
        "op": "or",
        "conditions": [
            {"subject": f"field:{stack.ids['field']}", "op": "eq", "value": "jane"},
            {"kind": "page_visit", "url_op": "contains", "url": "pricing", "within_days": 30},
        ],
    }
    # the page shows the stored rule again in the builder
    assert page.locator("#builder .cond").count() == 2
    # a rule the service refuses comes back as a one-line message, nothing saved
    bad = [{"type": "field", "subject": "lead_score", "op": "contains", "value": "x"}]
    page.click("#advanced summary")
    page.fill("#conditions", json.dumps({"type": "group", "conditions": bad}))
    page.click("#save-automation")
    error = page.locator("#automation-form .input-error")
    expect(error).to_have_text("operator 'contains' does not apply to a number value")
    assert page.locator("text=does not apply to a number value").count() == 1  # once, beside the rule
    expect(page.locator("input[name=name]")).to_have_value("Warm Paris leads")  # what was typed, kept


def test_a_get_action_says_what_the_listener_maps_and_its_test_send_is_acknowledged(
    page: Page, stack: Stack
) -> None:
    login(page, stack.platform_url)
    _new_manual_automation(page, stack, "Audience pixel (GET)")
    page.click("#add-action")
    page.fill("#url", stack.sync_url + "?cid=[#ID#]&town=[#CITY#]&greet=[#PROPER FIRST_NAME#]&src=ads")
    page.select_option("#method", "GET")
    page.locator("#template-ok").wait_for(state="visible")
    page.click("#save-action")
    page.wait_for_selector("text=action saved")
    advice = page.locator("#get-advice").inner_text()
    assert "maps to id" in advice, advice
    assert "shaped by functions" in advice
    mapping = page.locator("#get-mapping").inner_text()
    assert mapping.startswith("CONTACTSYNC_LISTENER_GET_MAPPING=")
    assert '"cid": "id"' in mapping or '"cid":"id"' in mapping

    page.fill("#contact_id", str(stack.ids["jane"]))
    page.click("#test-send-button")
    page.locator("#test-send-meta:not(:empty)").wait_for()
    assert page.locator("#test-send-meta").inner_text().startswith("Delivered: HTTP 200")


def test_a_delayed_action_says_when_its_data_is_rendered(page: Page, stack: Stack) -> None:
    login(page, stack.platform_url)
    _new_manual_automation(page, stack, "Wait a day, then sync")
    page.click("#add-action")
    page.fill("#url", stack.sync_url)
    page.locator("#template-ok").wait_for(state="visible")
    page.fill("input[name=delay_s]", "86400")
    expect(page.locator("#render")).to_have_value("at_send")  # what "wait a day, then sync" means
    page.click("#save-action")
    page.wait_for_selector("text=action saved")
    page.fill("#contact_id", str(stack.ids["jane"]))
    page.click("#preview-button")
    expect(page.locator("#preview-meta")).to_contain_text(
        "sent 1 day after the trigger, rendered when the delay ends"
    )
    page.select_option("#render", "at_trigger")  # previewed unsaved, then saved
    page.click("#preview-button")
    expect(page.locator("#preview-meta")).to_contain_text("sent 1 day after the trigger, as at the trigger")
    page.click("#save-action")
    page.wait_for_selector("text=action saved")
    expect(page.locator("#render")).to_have_value("at_trigger")
