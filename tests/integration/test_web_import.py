"""Importing a CSV in the admin UI over real HTTP (SQLite and PostgreSQL): the mapping guessed from the
header by field names, the preview of the first rows as they will be stored, all or nothing with every
row's problem listed, the counts and one audit row on success, the size limit, CSRF and roles."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any
from urllib.parse import unquote

import httpx
import sqlalchemy as sa

from contactsync.db.platform import contacts, deliveries
from contactsync.web.import_pages import UPLOAD_MAX_BYTES, chunks
from support.api import Api, api_client
from support.web import Ui, audit_actions, person, sign_in

EDITOR = "ed@example.com"
VIEWER = "view@example.com"


@contextmanager
def setup(db_url: str) -> Iterator[tuple[Api, Ui, dict[str, Any]]]:
    """A list with typed fields, an automation on contact.created with an action (no dispatcher: its
    deliveries stay pending), and a signed-in editor."""
    with api_client(db_url, session_secret="s", admin_password="an operator's password") as api:
        lid = api.ok("POST", "/api/lists", 201, json={"name": "Customers"})["id"]
        ids: dict[str, Any] = {"list": lid}
        for name, body in {
            "first": {"name": "First name", "type": "text"},
            "city": {"name": "City", "type": "text", "shortcode_key": "TOWN"},
            "age": {"name": "Age", "type": "number"},
            "plan": {"name": "Plan", "type": "choice", "choices": ["free", "pro"]},
            "born": {"name": "Born", "type": "date"},
        }.items():
            ids[name] = api.ok("POST", f"/api/lists/{lid}/fields", 201, json=body)["id"]
        body = {"list_id": lid, "name": "on create", "trigger": {"event": "contact.created"},
                "reentry": {"policy": "always"}}  # fmt: skip
        auto = api.ok("POST", "/api/automations", 201, json=body)["id"]
        api.ok("POST", f"/api/automations/{auto}/actions", 201, json={"url": "https://crm.example/in"})
        person(api.engine, EDITOR, account_id=api.account_id, role="editor")
        with closing(sign_in(api.base_url, EDITOR)) as ui:
            yield api, ui, ids


def upload(ui: Ui, lid: int, body: str | bytes, name: str = "people.csv") -> httpx.Response:
    data = body.encode() if isinstance(body, str) else body
    return ui.post(f"/lists/{lid}/import/preview", files={"file": (name, data, "text/csv")})


def form_of(page: str) -> dict[str, Any]:
    """The preview form's hidden fields and chosen mapping, as the browser would send them back."""
    form: dict[str, Any] = {"csv": re.findall(r'name="csv" value="([^"]*)"', page)}
    form["filename"] = html.unescape(re.search(r'name="filename" value="([^"]*)"', page).group(1))  # type: ignore[union-attr]
    for index, select in re.findall(r'<select name="map:(\d+)"(.*?)</select>', page, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected>', select)
        form[f"map:{index}"] = chosen.group(1) if chosen else ""
    return form


def mapping(page: str, fields: dict[str, int]) -> list[str]:
    """The chosen target of each column, with field ids named as in ``fields``."""
    names = {f"field:{v}": k for k, v in fields.items() if isinstance(v, int)}
    chosen = form_of(page)
    count = len([k for k in chosen if k.startswith("map:")])
    return [names.get(chosen[f"map:{i}"], chosen[f"map:{i}"]) for i in range(count)]


def cells(page: str, table: str) -> list[list[str]]:
    body = re.search(rf'<table class="{table}".*?<tbody>(.*?)</tbody>', page, re.S)
    assert body is not None, f"no {table} table"
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(1), re.S)

    def strip(cell: str) -> str:
        return html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()

    return [[strip(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]


def count_contacts(api: Api, lid: int) -> int:
    with api.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(contacts).where(contacts.c.list_id == lid)
        return int(conn.execute(query).scalar_one())


GOOD = (
    "E-mail,first name,AGE,plan,Town ,Phone Number,Notes,born\n"
    "ada@example.com,Ada,36.0,pro,London,+44 20 7946 0000,likes maths,1815-12-10\n"
    "bob@example.com,Bob,41,free,Paris,,,\n"
    "cy@example.com,Cy,,,Lyon,,,2001-02-03T04:05:06+02:00\n"
)


def test_the_mapping_is_guessed_from_field_names_and_the_preview_shows_what_will_be_stored(
    db_url: str,
) -> None:
    with setup(db_url) as (api, ui, ids):
        lid = ids["list"]
        lists_page = ui.get("/lists").text
        assert f'href="/lists/{lid}/import"' in lists_page
        assert "No contacts yet — " in lists_page
        assert "import a CSV</a> or" in ui.get(f"/contacts?list={lid}").text
        assert 'type="file"' in ui.get(f"/lists/{lid}/import").text

        page = upload(ui, lid, GOOD)
        assert page.status_code == 200, page.text[-2000:]
        assert mapping(page.text, ids) == ["email", "first", "age", "plan", "city", "phone", "", "born"]
        preview = cells(page.text, "preview")
        assert preview[0] == [
            "2",
            "ada@example.com",
            "Ada",
            "36",
            "pro",
            "London",
            "+44 20 7946 0000",
            "1815-12-10",
        ]
        assert preview[2] == ["4", "cy@example.com", "Cy", "", "", "Lyon", "", "2001-02-03 02:05:06"]
        assert 'id="run-import"' in page.text
        assert "Import 3 contacts" in page.text
        assert count_contacts(api, lid) == 0  # a preview writes nothing
        assert audit_actions(api.engine) == []

        # the person corrects the guess: "Town" is not the City, "Notes" goes to First name instead
        form = form_of(page.text) | {"map:1": "", "map:4": "", "map:6": f"field:{ids['first']}"}
        again = ui.post(f"/lists/{lid}/import/preview", form)
        assert again.status_code == 200
        assert mapping(again.text, ids) == ["email", "", "age", "plan", "", "phone", "first", "born"]
        assert cells(again.text, "preview")[0][2] == "36"
        assert "likes maths" in cells(again.text, "preview")[0]

        twice = ui.post(f"/lists/{lid}/import/preview", form | {"map:4": f"field:{ids['first']}"})
        assert twice.status_code == 422
        assert "columns 'Town' and 'Notes' both go to First name" in html.unescape(twice.text)
        no_email = ui.post(f"/lists/{lid}/import/preview", form | {"map:0": ""})
        assert "one column must be the contacts' Email" in html.unescape(no_email.text)
        assert 'id="run-import"' not in no_email.text


def test_one_bad_row_imports_nothing_and_every_problem_is_named_by_row_and_column(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        lid = ids["list"]
        bad = (
            "email,Plan,Age,City\n"
            "ok@example.com,pro,30,Paris\n"
            "not-an-email,free,31,Rome\n"
            "gold@example.com,gold,32,Oslo\n"
            "text@example.com,free,thirty,Bern\n"
            "short@example.com,free\n"
        )
        page = upload(ui, lid, bad)
        assert page.status_code == 422
        assert cells(page.text, "problems") == [
            ["3", "email", "'not-an-email' is not an email address"],
            ["4", "Plan", "'gold' is not one of ['free', 'pro']"],
            ["5", "Age", "'thirty' is not a number"],
            ["6", "—", "2 cells for 4 columns"],
        ]
        assert "4 rows to fix" in page.text
        assert 'id="run-import"' not in page.text

        done = ui.post(f"/lists/{lid}/import", form_of(page.text))  # submitted anyway
        assert done.status_code == 422
        assert "Nothing was imported" in done.text
        assert len(cells(done.text, "problems")) == 4
        assert count_contacts(api, lid) == 0
        with api.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar_one() == 0
        assert audit_actions(api.engine) == []

        # a fixed file whose mapping was tampered with on the way is checked again, not trusted
        fixed = upload(ui, lid, "email,Plan\nok@example.com,pro\n")
        assert fixed.status_code == 200
        tampered = form_of(fixed.text) | {"map:1": f"field:{ids['age']}"}
        refused = ui.post(f"/lists/{lid}/import", tampered)
        assert refused.status_code == 422
        assert cells(refused.text, "problems") == [["2", "Plan", "'pro' is not a number"]]
        assert ui.post(f"/lists/{lid}/import", tampered | {"map:1": "field:999999"}).status_code == 422
        assert ui.post(f"/lists/{lid}/import", tampered | {"csv": ["!!not base64"]}).status_code == 422
        assert count_contacts(api, lid) == 0


def test_an_import_says_how_many_were_created_and_updated_and_writes_one_audit_row(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        lid = ids["list"]
        api.ok("POST", f"/api/lists/{lid}/contacts", 201, json={"email": "ada@example.com"})
        page = upload(ui, lid, GOOD, name="spring fair.csv")
        done = ui.post(f"/lists/{lid}/import", form_of(page.text))
        assert done.status_code == 303, done.text[-2000:]
        location = unquote(done.headers["location"])
        assert location.startswith(f"/contacts?list={lid}&msg=")
        assert "imported 3 rows: 2 contacts created, 1 updated, 0 unchanged; 2 deliveries queued" in location
        listed = ui.get(done.headers["location"]).text
        for email in ("ada@example.com", "bob@example.com", "cy@example.com"):
            assert email in listed
        ada = api.ok("GET", f"/api/lists/{lid}/contacts", params={"email": "ada@example.com"})
        contact = ada["items"][0] if "items" in ada else ada
        values = {v["name"]: v["value"] for v in contact["fields"]}
        assert values == {
            "First name": "Ada",
            "City": "London",
            "Age": "36",
            "Plan": "pro",
            "Born": "1815-12-10",
        }
        assert contact["phone"] == "+44 20 7946 0000"
        detail = {"file": "spring fair.csv", "rows": 3, "created": 2, "updated": 1, "unchanged": 0,
                  "entries": 2, "deliveries": 2}  # fmt: skip
        assert audit_actions(api.engine) == [("contact.import", EDITOR, str(lid), detail)]


def test_a_file_over_the_limit_is_refused_with_its_size(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        lid = ids["list"]
        row = "someone@example.com,Paris\n"
        big = "email,City\n" + row * (UPLOAD_MAX_BYTES // len(row) + 1)
        refused = upload(ui, lid, big)
        assert refused.status_code == 413
        message = html.unescape(re.search(r'id="import-error">(.*?)</p>', refused.text).group(1))  # type: ignore[union-attr]
        assert message == "the file is 2.0 MB; an import takes at most 2.0 MB: split it into smaller files"
        carried = {"csv": chunks(big.encode()), "map:0": "email", "filename": "x.csv"}
        assert ui.post(f"/lists/{lid}/import", carried).status_code == 413
        empty = upload(ui, lid, "email,City\n")
        assert empty.status_code == 422
        assert "no contacts below its header row" in empty.text
        assert upload(ui, lid, b"\xff\xfe e,m\n").status_code == 422
        assert count_contacts(api, lid) == 0
        assert audit_actions(api.engine) == []


def test_csrf_and_roles_are_enforced_and_another_accounts_list_is_not_found(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        lid = ids["list"]
        page = upload(ui, lid, "email\nz@example.com\n")
        form = form_of(page.text)
        forged = ui.client.post(f"/lists/{lid}/import", data=form)  # no token
        assert forged.status_code == 403
        wrong = ui.client.post(f"/lists/{lid}/import", data=form | {"csrf_token": "x" * 32})
        assert wrong.status_code == 403
        no_token = ui.client.post(
            f"/lists/{lid}/import/preview", files={"file": ("a.csv", b"email\nz@example.com\n", "text/csv")}
        )
        assert no_token.status_code == 403
        assert count_contacts(api, lid) == 0

        person(api.engine, VIEWER, account_id=api.account_id, role="viewer")
        with closing(sign_in(api.base_url, VIEWER)) as viewer:
            assert viewer.get(f"/lists/{lid}/import").status_code == 403
            assert viewer.post(f"/lists/{lid}/import", form).status_code == 403
            assert f"/lists/{lid}/import" not in viewer.get("/lists").text
        assert ui.get("/lists/999999/import").status_code == 404
        assert ui.post("/lists/999999/import", form).status_code == 404
        assert count_contacts(api, lid) == 0
        assert audit_actions(api.engine) == []
