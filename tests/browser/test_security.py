"""Admin UI security in real Chromium: contact markup stays inert on every page; CSRF is enforced."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from contactsync.automation.manual import run_to_completion, start_run
from contactsync.db.listener import contacts as sync_contacts
from contactsync.db.listener import inbox
from contactsync.db.platform import deliveries
from support.browser import PASSWORD, XSS_EMAIL, XSS_NAME, Stack, login

if TYPE_CHECKING:
    from playwright.sync_api import Page


pytestmark = pytest.mark.browser


def _sync_evil_contact(stack: Stack) -> tuple[int, str]:
    """Sync the hostile contact to the listener; returns its delivery id and transactionid."""
    with stack.engine.begin() as conn:
        run = start_run(conn, stack.runtime, stack.ids["automation"])
    run_to_completion(stack.engine, stack.runtime, run.id)
    for _ in range(200):
        with stack.engine.connect() as conn:
            row = conn.execute(
                sa.select(deliveries.c.id, deliveries.c.transactionid).where(
                    deliveries.c.contact_id == stack.ids["evil"], deliveries.c.state == "delivered"
                )
            ).first()
        with stack.listener_engine.connect() as conn:
            projected = conn.execute(
                sa.select(sync_contacts.c.contact_id).where(
                    sync_contacts.c.contact_id == str(stack.ids["evil"])
                )
            ).first()
        if row is not None and projected is not None:
            return int(row.id), str(row.transactionid)
        time.sleep(0.1)
    raise AssertionError("the hostile contact was not delivered and projected")


def _inert(page: Page, url: str, *, expect_text: str) -> None:
    page.goto(url)
    assert page.evaluate("() => window.__xss") is None, f"markup ran on {url}"
    assert page.locator("script:not([src]):not([type='application/json'])").count() == 0, url
    assert page.locator("img[src=x]").count() == 0, f"markup became an element on {url}"
    assert page.get_by_text(expect_text, exact=False).count() >= 1, (
        f"{expect_text!r} is not shown as text on {url}"
    )


def test_contact_markup_renders_as_text_on_every_page(page: Page, stack: Stack) -> None:
    delivery_id, tid = _sync_evil_contact(stack)
    evil = stack.ids["evil"]
    login(page, stack.platform_url)
    platform_pages = [
        (f"{stack.platform_url}/contacts", "<script>"),
        (f"{stack.platform_url}/contacts?q=%3Cscript%3E", "<script>"),  # an email by its beginning
        (f"{stack.platform_url}/contacts/{evil}", "<script>"),
        (f"{stack.platform_url}/deliveries/{delivery_id}", "%3Cscript%3E"),  # the form body, as sent
        (f"{stack.platform_url}/deliveries?contact={evil}", tid),
    ]
    for url, shown in platform_pages:
        _inert(page, url, expect_text=shown)
    _inert(page, f"{stack.platform_url}/contacts/{evil}", expect_text=XSS_NAME)
    # the action page lists sample contacts, and its preview shows the rendered request
    page.goto(f"{stack.platform_url}/actions/{stack.ids['action']}")
    page.fill("#contact_id", str(evil))
    page.click("#preview-button")
    page.locator("#preview-meta:not(:empty)").wait_for()
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("#preview-request img").count() == 0

    login(page, stack.listener_url + "/admin")
    for url in (
        f"{stack.listener_url}/admin/",
        f"{stack.listener_url}/admin/contacts",
        f"{stack.listener_url}/admin/contacts/{evil}",
        f"{stack.listener_url}/admin/syncs/{tid}",
    ):
        _inert(page, url, expect_text="<script>")  # the recent syncs name the contact by its email too
    with stack.listener_engine.connect() as conn:
        assert conn.execute(sa.select(inbox.c.id).where(inbox.c.transactionid == tid)).first() is not None
    assert XSS_EMAIL in page.content().replace("&lt;", "<").replace("&gt;", ">")


def test_forms_without_the_csrf_token_are_refused(page: Page, stack: Stack) -> None:
    login(page, stack.platform_url)
    request = page.context.request  # shares the logged-in session cookie
    for path in (
        "/keys",
        "/lists",
        "/deliveries/1/retry",
        f"/actions/{stack.ids['action']}/rotate",
        "/logout",
    ):
        refused = request.post(stack.platform_url + path, form={"name": "x"}, max_redirects=0)
        assert refused.status == 403, path
        forged = request.post(
            stack.platform_url + path, form={"name": "x", "csrf_token": "forged"}, max_redirects=0
        )
        assert forged.status == 403, path
    json_call = request.post(
        stack.platform_url + "/ui/validate", data={"list_id": 1, "url": "https://x.test/"}
    )
    assert json_call.status == 403
    # the page's own form, with its token, works
    page.goto(stack.platform_url + "/keys")
    page.fill("input[name=name]", "from the form")
    page.click("text=Create key")
    assert page.locator("#new-key").inner_text().startswith("csk_")
    # and a login POST without the token of its form is refused too
    browser = page.context.browser
    assert browser is not None
    anonymous = browser.new_context()
    try:
        answer = anonymous.request.post(
            stack.platform_url + "/login", form={"password": PASSWORD}, max_redirects=0
        )
        assert answer.status == 403
    finally:
        anonymous.close()


def test_nothing_is_served_without_login(page: Page, stack: Stack) -> None:
    for path in ("/", "/contacts", f"/contacts/{stack.ids['jane']}", "/deliveries", "/keys", "/automations"):
        page.goto(stack.platform_url + path)
        assert "/login" in page.url, path
    answer = page.context.request.post(stack.platform_url + "/ui/validate", data={})
    assert answer.status == 401
    page.goto(stack.listener_url + "/admin/contacts")
    assert "/admin/login" in page.url


def test_login_is_rate_limited(page: Page, stack: Stack) -> None:
    page.goto(stack.listener_url + "/admin/login")  # the listener's limiter: other tests log in
    statuses = []
    for _ in range(7):
        page.fill("input[name=password]", "not it")
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.click("button[type=submit]")
        statuses.append(answer.value.status)
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]
    assert page.get_by_text("Too many attempts").count() == 1
