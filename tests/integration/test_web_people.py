"""People in the admin UI, over real HTTP on SQLite and PostgreSQL: removal, suspension and disabling end
sessions at once (the operator's excepted), a new role holds from the next request, the last owner is
protected, one-time passwords are shown once, the switcher moves between accounts, every list page
shows its own account only, and the audit page filters and pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, closing
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest

from contactsync.automation.lists import create_account
from contactsync.tenancy import people
from contactsync.tenancy.roles import Role
from support.api import Api, api_client, new_account
from support.web import PASSWORD, person, sign_in

OPERATOR = "operator@example.com"


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    """The API app with its UI over a database with account A (api.account_id) and its operator."""
    with api_client(db_url, admin_password=PASSWORD, admin_email=OPERATOR, session_secret="s") as api:
        yield api


def _logged_out(response_status: int, location: str) -> bool:
    return response_status == 303 and location.startswith("/login")


def test_removing_a_member_ends_their_session_at_once(api: Api) -> None:
    person(api.engine, "owner@example.com", account_id=api.account_id, role="owner")
    member = person(api.engine, "ed@example.com", account_id=api.account_id, role="editor")
    with (
        closing(sign_in(api.base_url, "owner@example.com")) as owner,
        closing(sign_in(api.base_url, "ed@example.com")) as editor,
    ):
        assert editor.get("/lists").status_code == 200
        done = owner.post(f"/members/{member}/remove")
        assert "their sessions have ended" in unquote(done.headers["location"])
        gone = editor.get("/lists")
        assert _logged_out(gone.status_code, gone.headers["location"])
        assert editor.post("/lists", {"name": "too late"}).status_code == 401
        again = sign_in(api.base_url, "ed@example.com", expect=403)  # a member of no account now
        again.close()


def test_suspension_ends_the_members_sessions_but_not_the_operators(api: Api) -> None:
    person(api.engine, "viewer@example.com", account_id=api.account_id, role="viewer")
    with ExitStack() as stack:
        operator = stack.enter_context(closing(sign_in(api.base_url, OPERATOR, PASSWORD)))
        viewer = stack.enter_context(closing(sign_in(api.base_url, "viewer@example.com")))
        assert operator.post("/account/switch", {"account_id": api.account_id}).status_code == 303
        done = operator.post(f"/operator/accounts/{api.account_id}/suspend")
        assert "suspended" in unquote(done.headers["location"])
        gone = viewer.get("/automations")
        assert _logged_out(gone.status_code, gone.headers["location"])
        sign_in(api.base_url, "viewer@example.com", expect=403).close()  # no active account to work in
        assert operator.get("/automations").status_code == 200  # still in it, as its owner
        assert "(suspended)" in operator.get("/operator").text
        assert operator.post(f"/operator/accounts/{api.account_id}/reactivate").status_code == 303
        back = stack.enter_context(closing(sign_in(api.base_url, "viewer@example.com")))
        assert back.get("/automations").status_code == 200


def test_disabling_a_user_ends_their_sessions(api: Api) -> None:
    user = person(api.engine, "ed@example.com", account_id=api.account_id, role="editor")
    with (
        closing(sign_in(api.base_url, OPERATOR, PASSWORD)) as operator,
        closing(sign_in(api.base_url, "ed@example.com")) as editor,
    ):
        assert operator.post(f"/operator/users/{user}/disable").status_code == 303
        gone = editor.get("/")
        assert _logged_out(gone.status_code, gone.headers["location"])
        sign_in(api.base_url, "ed@example.com", expect=401).close()
        assert operator.post(f"/operator/users/{user}/enable").status_code == 303
        sign_in(api.base_url, "ed@example.com").close()


def test_a_new_role_holds_from_the_next_request(api: Api) -> None:
    person(api.engine, "owner@example.com", account_id=api.account_id, role="owner")
    member = person(api.engine, "v@example.com", account_id=api.account_id, role="viewer")
    with (
        closing(sign_in(api.base_url, "owner@example.com")) as owner,
        closing(sign_in(api.base_url, "v@example.com")) as member_ui,
    ):
        refused = member_ui.post("/lists", {"name": "mine"})
        assert refused.status_code == 403
        assert "Your role in acme is viewer; ask an owner." in refused.text
        assert "Create list" not in member_ui.get("/lists").text  # the form is not offered
        assert owner.post(f"/members/{member}/role", {"role": "editor"}).status_code == 303
        assert member_ui.post("/lists", {"name": "mine"}).status_code == 303
        assert "Create list" in member_ui.get("/lists").text
        assert member_ui.get("/members").status_code == 403


def test_the_last_owner_can_be_neither_removed_nor_demoted(api: Api) -> None:
    owner_id = person(api.engine, "owner@example.com", account_id=api.account_id, role="owner")
    with closing(sign_in(api.base_url, "owner@example.com")) as owner:
        for path, data in (
            (f"/members/{owner_id}/remove", {}),
            (f"/members/{owner_id}/role", {"role": "viewer"}),
        ):
            answer = owner.post(path, data)
            assert "last owner" in unquote(answer.headers["location"]), path
        assert "owner@example.com" in owner.get("/members").text


def test_a_new_members_one_time_password_is_shown_once_and_works(api: Api) -> None:
    person(api.engine, "owner@example.com", account_id=api.account_id, role="owner")
    with closing(sign_in(api.base_url, "owner@example.com")) as owner:
        added = owner.post("/members", {"email": "New.Person@Example.com", "role": "editor"})
        assert added.status_code == 200
        found = re.search(r'id="one-time-password">([^<]+)<', added.text)
        assert found is not None
        password = found.group(1)
        assert password not in owner.get("/members").text
        again = owner.post("/members", {"email": "new.person@example.com", "role": "viewer"})
        assert again.status_code == 400
        assert "already a member" in again.text
    with closing(sign_in(api.base_url, "new.person@example.com", password)) as newcomer:
        page = newcomer.get("/")
        assert 'id="my-role">editor<' in page.text
        assert 'id="my-account">acme<' in page.text


def test_the_switcher_moves_between_accounts_and_pages_show_only_their_own(api: Api) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    with api.engine.begin() as conn:
        other = create_account(conn, name="other", now=now)
    api.ok("POST", "/api/lists", 201, json={"name": "A-only list"})
    person(api.engine, "both@example.com", account_id=api.account_id, role="owner")
    with api.engine.begin() as conn:
        people.add_member(conn, other, email="both@example.com", role=Role.VIEWER, now=now)
    with closing(sign_in(api.base_url, "both@example.com")) as ui:
        assert "A-only list" in ui.get("/lists").text
        assert ui.post("/account/switch", {"account_id": other}).status_code == 303
        page = ui.get("/lists")
        assert "A-only list" not in page.text
        assert 'id="my-role">viewer<' in page.text
        assert ui.get("/keys").status_code == 403  # a viewer here
        assert ui.post("/account/switch", {"account_id": 10**9}).status_code == 404
        assert ui.post("/account/switch", {"account_id": api.account_id}).status_code == 303
        assert ui.get("/keys").status_code == 200


def test_list_pages_show_nothing_of_another_account(api: Api) -> None:
    lst = api.ok("POST", "/api/lists", 201, json={"name": "Zanzibar list of A"})
    auto = api.ok("POST", "/api/automations", 201,
                  json={"list_id": lst["id"], "name": "Zanzibar automation of A",
                        "trigger": {"event": "contact.created"}})  # fmt: skip
    api.ok("POST", f"/api/automations/{auto['id']}/actions", 201, json={"url": "https://zanzibar.example/in"})
    api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": "zanzibar.contact@a.example"})
    api.ok("POST", "/api/keys", 201, json={"name": "Zanzibar key of A"})
    b, _ = new_account(api.engine, "beta")
    person(api.engine, "b@example.com", account_id=b, role="owner")
    with closing(sign_in(api.base_url, "b@example.com")) as ui:
        pages = ("/", "/contacts", "/contacts?q=contact%40a.example", "/lists", "/automations",
                 "/deliveries", "/keys", "/members", "/audit")  # fmt: skip
        for path in pages:
            page = ui.get(path)
            assert page.status_code == 200, path
            assert "zanzibar" not in page.text.lower(), path


def test_the_audit_page_filters_and_pages(api: Api) -> None:
    person(api.engine, "owner@example.com", account_id=api.account_id, role="owner")
    with closing(sign_in(api.base_url, "owner@example.com")) as owner:
        for i in range(55):
            assert owner.post("/lists", {"name": f"list {i}"}).status_code == 303
        owner.post("/keys", {"name": "one key"})
        lists = owner.get("/audit", params={"action": "list."})
        assert lists.text.count("<code>list.create</code>") == 50
        assert "key.create" not in lists.text
        older = re.search(r'href="\?([^"]+)" id="older"', lists.text)
        assert older is not None
        rest = owner.get("/audit?" + older.group(1).replace("&amp;", "&"))
        assert rest.text.count("<code>list.create</code>") == 5
        assert 'id="older"' not in rest.text
        keys = owner.get("/audit", params={"actor": "owner@", "target_type": "key"})
        assert keys.text.count("<code>key.create</code>") == 1
        assert "list.create" not in keys.text
        assert owner.get("/audit", params={"actor": "somebody else"}).text.count("<code>") == 0
        future = owner.get("/audit", params={"since": "2999-01-01"})
        assert "Nothing recorded" in future.text


def test_the_operator_outside_every_account_lands_on_the_operator_page(db_url: str) -> None:
    with api_client(db_url, admin_password=PASSWORD, admin_email=OPERATOR, session_secret="s") as api:
        with api.engine.begin() as conn:  # the only account suspended: nowhere to land but /operator
            people.set_suspended(
                conn, api.account_id, suspended=True, now=datetime.now(UTC).replace(tzinfo=None)
            )
        with closing(sign_in(api.base_url, OPERATOR, PASSWORD)) as operator:
            home = operator.get("/")
            assert home.status_code == 303
            assert home.headers["location"] == "/operator"
            assert operator.get("/operator").status_code == 200
            assert operator.post("/lists", {"name": "where?"}).status_code == 403


def test_a_form_naming_an_unknown_field_is_a_form_error_not_a_404(api: Api) -> None:
    lst = api.ok("POST", "/api/lists", 201, json={"name": "L"})
    person(api.engine, "ed@example.com", account_id=api.account_id, role="editor")
    with closing(sign_in(api.base_url, "ed@example.com")) as ui:
        form = {"list_id": str(lst["id"]), "name": "n", "trigger": "contact.updated", "trigger_fields": "999"}
        answer = ui.post("/automations/new", form)
        assert answer.status_code == 422  # the form again, the error beside the trigger's fields
        assert "the list has no field 999</span>" in answer.text
        assert 'name="trigger_fields" value="999"' in answer.text
        assert ui.post("/automations/new", {**form, "list_id": "999999"}).status_code == 404
