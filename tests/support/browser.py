"""What browser tests share besides fixtures: the seeded people and their password, the running stack, and
signing in. (Fixtures live in ``tests/browser/conftest.py``; a conftest is not a module to import from.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from contactsync.automation.runtime import Runtime
from contactsync.settings import Settings

if TYPE_CHECKING:
    from playwright.sync_api import Page

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORD = "correct horse battery staple"
OPERATOR = "admin@localhost"
"""The operator CONTACTSYNC_ADMIN_PASSWORD bootstraps (the default admin email); signs in with PASSWORD."""
OWNER = "owner@example.com"
"""An owner of the seeded account, who signs in with PASSWORD too."""
XSS_NAME = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
XSS_EMAIL = "<script>alert(1)</script>@evil.test"


@dataclass
class Stack:
    """Two running apps and what the tests need to know about them."""

    settings: Settings
    platform_url: str
    listener_url: str
    sync_url: str
    engine: sa.Engine
    listener_engine: sa.Engine
    runtime: Runtime
    ids: dict[str, int] = field(default_factory=dict)


def login(page: Page, base: str, email: str = OPERATOR, password: str = PASSWORD) -> None:
    """Sign in (the platform asks for an email; the listener only for its admin password)."""
    page.goto(base + "/login")
    if page.locator("input[name=email]").count():
        page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_selector("text=Log out")
