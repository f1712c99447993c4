"""A marketer imports a spreadsheet in real Chromium: the empty list's hint, the upload, the columns
matched to fields by name (one corrected by hand), a file with a bad row refused whole with the row
named, then the fixed file previewed and imported, and the contacts on the list's page.

Screenshots of each step go to ``test-artifacts/`` (or ``CONTACTSYNC_SCREENSHOTS``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from contactsync.automation.lists import FieldIn, ListIn, account_of_list, create_field, create_list
from contactsync.db.platform import contacts
from contactsync.web.import_pages import UPLOAD_MAX_BYTES
from support.browser import ARTIFACTS, OWNER, PASSWORD, Stack, login

if TYPE_CHECKING:
    from playwright.sync_api import Page


pytestmark = pytest.mark.browser

SHOTS = Path(os.environ.get("CONTACTSYNC_SCREENSHOTS") or ARTIFACTS)
BAD = b"Email,First name,Plan,Town\nada@example.com,Ada,pro,London\nbob@example.com,Bob,gold,Paris\n"
GOOD = b"Email,First name,Plan,Town\nada@example.com,Ada,pro,London\nbob@example.com,Bob,free,Paris\n"


def _empty_list(stack: Stack) -> dict[str, int]:
    """A new list of the seeded account with First name, Plan (a choice) and City fields, no contacts."""
    now = stack.runtime.clock()
    with stack.engine.begin() as conn:
        account = account_of_list(conn, stack.ids["list"])
        lst = create_list(conn, ListIn(account_id=account, name="Spring fair"), now=now)
        made = {"list": lst.id}
        bodies: dict[str, dict[str, Any]] = {
            "first": {"name": "First name"},
            "plan": {"name": "Plan", "type": "choice", "choices": ["free", "pro"]},
            "city": {"name": "City", "shortcode_key": "CITY"},
        }
        for key, body in bodies.items():
            made[key] = create_field(conn, FieldIn.model_validate({"list_id": lst.id, **body}), now=now).id
    return made


def _upload(page: Page, name: str, data: bytes) -> None:
    page.set_input_files("#csv-file", {"name": name, "mimeType": "text/csv", "buffer": data})
    page.click("#upload")


def test_a_csv_is_mapped_previewed_refused_for_a_bad_row_then_imported(page: Page, stack: Stack) -> None:
    base = stack.platform_url
    ids = _empty_list(stack)
    lid = ids["list"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, base, OWNER, PASSWORD)

    page.goto(f"{base}/lists")
    expect(page.locator(f"#empty-{lid}")).to_have_text("No contacts yet — import a CSV or add one.")
    page.click(f"#import-{lid}")
    expect(page.locator("h1")).to_contain_text("Import contacts into Spring fair")

    # a file over the limit is refused before it is sent
    upload_url = page.url
    big = b"email\n" + b"someone@example.com\n" * (UPLOAD_MAX_BYTES // 20 + 1)
    page.set_input_files("#csv-file", {"name": "huge.csv", "mimeType": "text/csv", "buffer": big})
    message = page.eval_on_selector("#csv-file", "input => input.validationMessage")
    assert message == "This file is larger than 2.0 MB: split it into smaller files."
    page.click("#upload")
    assert page.url == upload_url

    # a file with one bad row: the mapping is guessed by name, the row is named, nothing can be imported
    _upload(page, "fair.csv", BAD)
    expect(page.locator("#map-0")).to_have_value("email")
    expect(page.locator("#map-1")).to_have_value(f"field:{ids['first']}")
    expect(page.locator("#map-2")).to_have_value(f"field:{ids['plan']}")
    expect(page.locator("#map-3")).to_have_value("")  # "Town" names no field: ignored until chosen
    problems = page.locator("#problems table.problems tbody tr")
    expect(problems).to_have_count(1)
    expect(problems.first.locator("td")).to_have_text(["3", "Plan", "'gold' is not one of ['free', 'pro']"])
    expect(page.locator("#run-import")).to_have_count(0)
    page.locator("main").screenshot(path=str(SHOTS / "import-problems.png"))

    # the fixed file; "Town" goes to City by hand, and the preview shows it
    page.click("text=upload another file")
    _upload(page, "fair.csv", GOOD)
    page.select_option("#map-3", f"field:{ids['city']}")
    page.click("#refresh")
    expect(page.locator("#map-3")).to_have_value(f"field:{ids['city']}")
    preview = page.locator("#preview tbody tr")
    expect(preview).to_have_count(2)
    expect(preview.nth(1).locator("td")).to_have_text(["3", "bob@example.com", "Bob", "free", "Paris"])
    expect(page.locator("#problems")).to_have_count(0)
    page.locator("main").screenshot(path=str(SHOTS / "import-preview.png"))

    page.click("#run-import")
    expect(page.locator(".flash.ok")).to_contain_text("2 contacts created, 0 updated")
    table = page.locator("table.contacts")
    expect(table).to_contain_text("ada@example.com")
    expect(table).to_contain_text("bob@example.com")
    page.locator("main").screenshot(path=str(SHOTS / "import-done.png"))
    with stack.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(contacts).where(contacts.c.list_id == lid)
        assert conn.execute(query).scalar_one() == 2

    page.click("a:has-text('bob@example.com')")
    expect(page.locator("#field-values")).to_contain_text("Paris")
