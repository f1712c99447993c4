"""The plain-language automation builder in real Chromium: a choice field's value picked from a select,
an activity sentence with its numbers inline, the JSON behind "advanced", saved as a draft and turned
on after a confirmation that counts who matches now. Screenshots: ``test-artifacts/builder-*.png``."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from contactsync.automation.automations import get_automation
from contactsync.automation.contacts import ContactIn, upsert_contact
from contactsync.automation.explain import dry_run
from contactsync.automation.lists import list_fields
from contactsync.db.platform import audit_log
from support.browser import ARTIFACTS, Stack, login

if TYPE_CHECKING:
    from playwright.sync_api import Page


pytestmark = pytest.mark.browser


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"builder-{name}.png"), full_page=True)


def test_build_in_words_save_as_draft_and_turn_on_after_the_count(page: Page, stack: Stack) -> None:
    login(page, stack.platform_url)
    list_id = stack.ids["list"]

    # a choice field without choices comes back with what was typed and one plain error beside it
    page.goto(stack.platform_url + "/lists")
    add = page.locator(f"#new-field-{list_id}")
    add.locator("input[name=name]").fill("Plan")
    add.locator("select[name=type]").select_option("choice")
    add.locator("button[type=submit]").click()
    add = page.locator(f"#new-field-{list_id}")
    expect(add.locator(".input-error")).to_have_text(
        "choices are required for a 'choice' field and only for it"
    )
    expect(add.locator("input[name=name]")).to_have_value("Plan")
    expect(add.locator("select[name=type]")).to_have_value("choice")
    assert "Value error" not in page.content()
    add.locator("input[name=choices]").fill("Free, Pro, Team")
    add.locator("button[type=submit]").click()
    page.wait_for_selector("text=field added")

    with stack.engine.begin() as conn:
        plan = next(f for f in list_fields(conn, list_id) if f.name == "Plan")
        upsert_contact(
            conn,
            ContactIn(list_id=list_id, email="jane.doe@example.com", fields={plan.shortcode_key: "Pro"}),
            now=stack.runtime.clock(),
        )

    page.goto(f"{stack.platform_url}/automations/new?list={list_id}")
    page.fill("input[name=name]", "Pro visitors of pricing")
    page.select_option("#trigger", "page.visited")
    expect(page.locator("#trigger option:checked")).to_have_text("a contact visits a page")
    builder = page.locator("#builder")
    builder.locator("button", has_text="+ field condition").click()
    row = builder.locator(".cond").nth(0)
    row.locator("select[aria-label=field]").select_option(label="Plan")
    comparison = row.locator("select[aria-label=comparison]")
    assert comparison.locator("option").all_inner_texts()[:3] == ["is", "is not", "is any of"]
    comparison.select_option(label="is")
    values = row.locator("select[aria-label=value]")
    assert values.locator("option").all_inner_texts() == ["Free", "Pro", "Team"]  # its choices, not free text
    comparison.select_option(label="is any of")
    row.locator("select[aria-label=values]").select_option(["Pro", "Team"])  # a multi-select
    assert json.loads(page.locator("#conditions").input_value())["conditions"][0]["value"] == ["Pro", "Team"]
    comparison.select_option(label="is")
    row.locator("select[aria-label=value]").select_option("Pro")
    builder.locator("button", has_text="+ activity condition").click()
    activity = builder.locator(".cond").nth(1)
    expect(activity.locator("select[aria-label=activity] option:checked")).to_have_text("visited a page")
    activity.locator("input").nth(0).fill("pricing")
    activity.locator("input").nth(1).fill("2")
    activity.locator("input").nth(2).fill("7")
    sentence = activity.inner_text()
    assert "at least" in sentence
    assert "times in the last" in sentence
    assert "days" in sentence
    builder.locator("select[aria-label='all or any']").select_option("or")
    page.check("input[name=reentry][value=per_hours]")
    page.fill("input[name=reentry_hours]", "24")
    _shot(page, "sentences")

    # the JSON tree is behind "advanced", and it is what the sentences say
    conditions = page.locator("#conditions")
    expect(conditions).to_be_hidden()
    page.click("#advanced summary")
    expect(conditions).to_be_visible()
    tree = json.loads(conditions.input_value())
    assert tree["op"] == "or"
    assert tree["conditions"][0] == {
        "type": "field",
        "subject": f"field:{plan.id}",
        "op": "eq",
        "value": "Pro",
    }
    assert tree["conditions"][1] == {
        "type": "activity", "kind": "page_visit", "min_count": 2, "url_op": "contains", "url": "pricing",
        "within_days": 7,
    }  # fmt: skip
    _shot(page, "advanced")
    # still editable there: the sentences follow the JSON
    edited = {**tree, "conditions": [tree["conditions"][0], {**tree["conditions"][1], "min_count": 3}]}
    conditions.fill(json.dumps(edited))
    expect(builder.locator(".cond").nth(1).locator("input").nth(1)).to_have_value("3")
    builder.locator(".cond").nth(1).locator("input").nth(1).fill("2")
    assert json.loads(conditions.input_value()) == tree

    page.click("#save-automation")
    page.wait_for_selector("text=automation created as a draft")
    automation_id = int(re.search(r"/automations/(\d+)", page.url).group(1))  # type: ignore[union-attr]
    expect(page.locator("#status-words")).to_have_text("Draft — off")
    with stack.engine.connect() as conn:
        saved = get_automation(conn, automation_id)
        expected = dry_run(conn, stack.runtime, automation_id).matching
    assert saved.status == "paused"
    assert saved.trigger.event == "page.visited"
    assert saved.reentry.hours == 24
    assert expected >= 1  # jane, on the Pro plan
    _shot(page, "draft")

    page.click("#turn-on")
    expect(page.locator("#confirm-count")).to_contain_text(f"{expected} of the list's")
    expect(page.locator("#confirm-yes")).to_contain_text(f"{expected} contact")
    _shot(page, "turn-on")
    with stack.engine.connect() as conn:
        assert get_automation(conn, automation_id).status == "paused"  # asking changed nothing
    page.click("#confirm-yes")
    page.wait_for_selector("text=automation turned on")
    expect(page.locator("#status-words")).to_have_text("On")
    with stack.engine.connect() as conn:
        assert get_automation(conn, automation_id).status == "active"
        audited = conn.execute(
            sa.select(audit_log.c.action).where(
                audit_log.c.target_id == str(automation_id), audit_log.c.action == "automation.turn_on"
            )
        ).all()
    assert len(audited) == 1
    _shot(page, "on")
