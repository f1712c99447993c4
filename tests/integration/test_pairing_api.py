"""Pairing from the platform's side, through its API: the test send says why it failed, in words, and
the listener sees which action sent a request (the sender headers), accepted or refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import unquote

import pytest
import sqlalchemy as sa

from contactsync.db import listener as t
from contactsync.db.sealing import generate_key
from contactsync.delivery.hints import ACTION_PAGE, SECRET_UNKNOWN
from support.api import Api, api_client, automation_with_action
from support.listener import Listener, start_listener, wait_for
from support.ports import free_socket
from support.web import PASSWORD, csrf_of, listener_sign_in, person, sign_in


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    yield from start_listener(
        f"sqlite:///{tmp_path / 'listener.db'}",
        admin_password=PASSWORD,
        session_secret="s" * 32,
        secrets_key=generate_key(),
        listener_projection=False,
    )


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with api_client(db_url, allowed_cidrs=["127.0.0.0/8"]) as client:
        yield client


def _test_send(api: Api, action_id: int, contact_id: int) -> dict[str, object]:
    sent = api.ok("POST", f"/api/actions/{action_id}/test-send", json={"contact_id": contact_id})
    response: dict[str, object] = sent["response"]
    return response


def test_a_test_send_explains_the_unknown_secret_and_passes_once_the_listener_knows_it(
    api: Api, listener: Listener
) -> None:
    lst, _automation, action = automation_with_action(api, listener.sync)
    contact = api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": "a@example.com"})[
        "contact"
    ]

    refused = _test_send(api, action["id"], contact["id"])
    assert refused["status"] == 401
    assert refused["hint"] == SECRET_UNKNOWN.replace("this page", ACTION_PAGE)  # read outside that page
    assert json.loads(str(refused["body"]))["reason"] == "no_match"  # the raw answer beside the hint
    name = f"new · action {action['id']}"
    wait_for(lambda: _refused_actions(listener) == [(str(action["id"]), name)])
    with closing(listener_sign_in(listener.base + "/admin", PASSWORD)) as admin:
        assert name in admin.get("/refused").text

        secret = api.ok("POST", f"/api/actions/{action['id']}/reveal")["secret"]
        token = csrf_of(admin.get("/secrets").text)
        added = admin.post("/secrets", data={"csrf_token": token, "label": name, "secret": secret})
        assert added.status_code == 303

    accepted = _test_send(api, action["id"], contact["id"])
    assert accepted["status"] == 200
    assert "paired" in str(accepted["hint"])
    with listener.engine.connect() as conn:
        stored = json.loads(conn.execute(sa.select(t.inbox.c.headers)).scalar_one())
    assert stored["x-contactsync-action"] == str(action["id"])
    assert stored["x-contactsync-action-name"].isascii()  # percent-encoded UTF-8: any name is a valid value
    assert unquote(stored["x-contactsync-action-name"]) == name


def _refused_actions(listener: Listener) -> list[tuple[str, str]]:
    with listener.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(t.refusals.c.action, t.refusals.c.action_name))]


def test_a_test_send_to_a_wrong_path_or_a_closed_port_says_so(api: Api, listener: Listener) -> None:
    lst, automation, action = automation_with_action(api, listener.base + "/sync/not-the-token")
    contact = api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": "b@example.com"})[
        "contact"
    ]
    wrong = _test_send(api, action["id"], contact["id"])
    assert wrong["status"] == 404
    assert "the URL is wrong" in str(wrong["hint"])

    with free_socket() as sock:  # bound, never listening: the connection is refused
        port = sock.getsockname()[1]
        closed = api.ok(
            "POST",
            f"/api/automations/{automation['id']}/actions",
            201,
            json={"url": f"http://127.0.0.1:{port}/x"},
        )
        nobody = _test_send(api, closed["id"], contact["id"])
    assert nobody["status"] is None
    assert "connection refused" in str(nobody["hint"])
    assert nobody["error"]  # the raw detail beside the hint


def test_the_connect_panel_reveals_to_owners_only_and_the_ui_test_send_carries_the_hint(
    db_url: str, listener: Listener
) -> None:
    with api_client(db_url, admin_password="an admin password", allowed_cidrs=["127.0.0.0/8"]) as api:
        lst, automation, action = automation_with_action(api, listener.sync)
        contact = api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": "c@example.com"})
        person(api.engine, "ed@example.com", account_id=api.account_id, role="editor")
        person(api.engine, "own@example.com", account_id=api.account_id, role="owner")
        editor, owner = sign_in(api.base_url, "ed@example.com"), sign_in(api.base_url, "own@example.com")
        try:
            page = editor.get(f"/actions/{action['id']}").text
            assert 'id="connect-panel"' in page
            assert f"{automation['name']} · action {action['id']}" in page  # the label to use on the listener
            assert 'id="reveal-owner-only"' in page
            assert 'id="reveal-secret"' not in page
            assert editor.post(f"/ui/actions/{action['id']}/reveal", json={}).status_code == 403
            page = owner.get(f"/actions/{action['id']}").text
            assert 'id="reveal-secret"' in page
            assert 'id="reveal-owner-only"' not in page

            sent = editor.post(
                f"/ui/actions/{action['id']}/test-send",
                {"contact_id": str(contact["contact"]["id"]), "url": listener.sync, "method": "POST"},
            )
            assert sent.status_code == 200, sent.text
            response = sent.json()["response"]
            assert response["status"] == 401
            assert response["hint"] == SECRET_UNKNOWN
            assert "no_match" in response["body"]
        finally:
            editor.close()
            owner.close()
