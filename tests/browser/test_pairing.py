"""Pairing in real Chromium: the action's "connect your listener" panel, a failing test send explained
in words, the secret added on the listener's Secrets page, and the test send passing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.sync_api import expect

from contactsync.db.sealing import keyring_from_settings
from contactsync.listener import secrets as store
from contactsync.wire.signing import generate_secret
from support.browser import ARTIFACTS, Stack, login

if TYPE_CHECKING:
    from playwright.sync_api import Page


pytestmark = pytest.mark.browser


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(Path(ARTIFACTS) / f"pairing-{name}.png"), full_page=True)


def _listener_checks_signatures(stack: Stack) -> None:
    """Give the listener a secret of another sender, so it starts checking (it did not, knowing none)."""
    settings = stack.settings
    keyring = keyring_from_settings(settings, database_url=settings.listener_database_url)
    with stack.listener_engine.begin() as conn:
        store.add(
            conn, keyring, label="another sender", secret=generate_secret(), now_ms=int(time.time() * 1000)
        )
    deadline = time.monotonic() + 20
    while httpx.post(stack.sync_url, content=b"transactionid=1").status_code != 401:  # refreshed within 1 s
        assert time.monotonic() < deadline, "the listener did not pick the secret up"
        time.sleep(0.1)


def test_connect_panel_explains_a_refused_test_send_and_pairs_the_listener(page: Page, stack: Stack) -> None:
    _listener_checks_signatures(stack)
    action_id = stack.ids["action"]
    label = f"Seeded · action {action_id}"

    login(page, stack.platform_url)
    page.goto(f"{stack.platform_url}/actions/{action_id}")
    panel = page.locator("#connect-panel")
    expect(panel).to_contain_text("Connect your listener")
    expect(page.locator("#suggested-label")).to_have_text(label)
    page.fill("#contact_id", str(stack.ids["jane"]))
    page.click("#test-send-button")
    page.locator("#test-send-hint:not(:empty)").wait_for()
    expect(page.locator("#test-send-meta")).to_contain_text("Failed: HTTP 401")
    expect(page.locator("#test-send-hint")).to_have_text(
        "The listener does not know this action's secret — add it under Secrets on the listener "
        "(copy it from “Connect your listener” on this page)."
    )
    expect(page.locator("#test-send-response")).to_contain_text("no_match")  # the raw answer, below
    _shot(page, "1-test-send-refused")

    page.click("#reveal-secret")
    expect(page.locator("#secret")).not_to_contain_text("•")
    secret = page.locator("#secret").inner_text()
    assert secret.startswith("whsec_")

    listener_admin = stack.listener_url + "/admin"
    login(page, listener_admin)
    page.goto(listener_admin + "/refused")
    for _ in range(50):  # refusals are written once a second: the page shows them after that
        if label in page.locator("#refused").inner_text():
            break
        time.sleep(0.2)
        page.reload()
    expect(page.locator("#refused")).to_contain_text(label)  # which action tried, by name
    expect(page.locator("#refused")).to_contain_text("no signature matches a secret this listener knows")
    _shot(page, "2-listener-refused")
    page.goto(listener_admin + "/secrets")
    page.fill("#secret-add input[name=label]", label)
    page.fill("#secret-add input[name=secret]", secret)
    page.click("#secret-add button[type=submit]")
    expect(page.locator("body")).to_contain_text(f"secret {label} added")
    expect(page.locator("#secrets")).to_contain_text(label)
    expect(page.locator("#secrets")).not_to_contain_text(secret)  # a masked hint only
    _shot(page, "3-listener-secrets")

    page.goto(f"{stack.platform_url}/actions/{action_id}")
    page.fill("#contact_id", str(stack.ids["jane"]))
    page.click("#test-send-button")
    page.locator("#test-send-hint:not(:empty)").wait_for()
    expect(page.locator("#test-send-meta")).to_contain_text("Delivered: HTTP 200")
    expect(page.locator("#test-send-hint")).to_contain_text("paired")
    _shot(page, "4-test-send-paired")
