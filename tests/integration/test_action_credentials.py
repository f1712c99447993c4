"""A stored credential never follows an action to another endpoint: moving the URL to a new host while
sending back a header's masked hint is refused (the value must be typed again), so an editor — who may
change actions but not reveal their secrets — cannot send them to a host of their choosing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from contactsync.api.app import bootstrap_operator
from contactsync.automation.preview import UNSIGNED
from contactsync.errors import ConfigError, ValidationError
from contactsync.settings import Settings
from contactsync.tenancy import people
from support.api import Api, Receiver, api_client, automation_with_action
from support.listener import serve
from support.web import person, sign_in


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with api_client(db_url) as client:
        yield client


def test_moving_an_action_needs_its_credentials_typed_again(api: Api) -> None:
    _, _, action = automation_with_action(
        api, "https://crm.example/hook", headers=[{"name": "X-Api-Key", "value": "crm-secret-123"}]
    )
    shown = api.ok("GET", f"/api/actions/{action['id']}")["settings"]
    hint = shown["headers"][0]["value"]
    assert hint != "crm-secret-123"

    # same endpoint, another path: the stored value is kept by its hint
    same = {**shown, "url": "https://crm.example/other"}
    api.ok("PUT", f"/api/actions/{action['id']}", json=same)
    revealed = api.ok("POST", f"/api/actions/{action['id']}/reveal")
    assert revealed["headers"][0]["value"] == "crm-secret-123"

    # another host with the hint: refused, nothing changed
    moved = {**shown, "url": "https://attacker.example/collect"}
    refused = api.client.put(f"/api/actions/{action['id']}", json=moved)
    assert refused.status_code == 422
    assert refused.json()["field"] == "headers"
    assert "X-Api-Key" in refused.json()["message"]
    assert api.ok("GET", f"/api/actions/{action['id']}")["endpoint"] == "https://crm.example:443"

    # another host with the value typed in: fine
    typed = {**moved, "headers": [{"name": "X-Api-Key", "value": "new-key-456"}]}
    assert (
        api.ok("PUT", f"/api/actions/{action['id']}", json=typed)["endpoint"]
        == "https://attacker.example:443"
    )


def test_a_preview_signs_nothing_and_keeps_credentials_home(api: Api) -> None:
    """A viewer may preview: a real signature for a URL and body of their choosing would be a webhook
    the customer's listener accepts; and unsaved settings for another host may not carry a stored
    credential (a test send would deliver it there)."""
    _, _, action = automation_with_action(
        api, "https://crm.example/hook", headers=[{"name": "X-Api-Key", "value": "crm-secret-123"}]
    )
    lst = api.ok("GET", "/api/lists")["items"][0]
    contact = api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": "p@example.com"})
    shown = api.ok("GET", f"/api/actions/{action['id']}")["settings"]
    forged = {**shown, "url": "https://crm.example/hook?action=unsubscribe", "method": "GET", "headers": []}
    preview = api.ok(
        "POST",
        f"/api/actions/{action['id']}/preview",
        json={"contact_id": contact["contact"]["id"], "settings": forged},
    )
    assert preview["headers"]["webhook-signature"] == UNSIGNED
    assert preview["headers"]["webhook-id"]
    moved = {**shown, "url": "https://attacker.example/collect"}
    refused = api.client.post(
        f"/api/actions/{action['id']}/preview",
        json={"contact_id": contact["contact"]["id"], "settings": moved},
    )
    assert refused.status_code == 200  # the API's preview shows hints only, never the stored value
    assert "crm-secret-123" not in refused.text


def test_the_admin_password_never_promotes_an_existing_user(db_url: str) -> None:
    """An owner adding a member by the operator's bootstrap email must not become the operator."""
    with api_client(db_url) as api:
        added = api.ok("POST", "/api/members", 201, json={"email": "admin@localhost", "role": "viewer"})
        with pytest.raises(ConfigError, match="existing user"):
            bootstrap_operator(
                Settings(admin_password="the real admin password", admin_email="admin@localhost"),
                api.engine,
                now=datetime.now(UTC).replace(tzinfo=None),
            )
        with api.engine.connect() as conn:
            user = people.get_user(conn, added["member"]["user_id"])
            assert not user.operator
            with pytest.raises(ValidationError):  # an empty new password is refused, not replaced
                people.set_password(conn, user.id, "")


def test_the_uis_test_send_keeps_credentials_home(db_url: str) -> None:
    """An editor's test send of unsaved settings for another host, with the header's masked hint: refused,
    and nothing reaches that host."""
    receiver = Receiver()
    with (
        serve(receiver.app) as elsewhere,
        api_client(db_url, admin_password="an admin password", allowed_cidrs=["127.0.0.0/8"]) as api,
    ):
        _, _, action = automation_with_action(
            api,
            "https://crm.example/hook",
            headers=[{"name": "Authorization", "value": "Bearer CRM-CRED-0123"}],
        )
        lst = api.ok("GET", "/api/lists")["items"][0]
        contact = api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": "q@example.com"})
        hint = api.ok("GET", f"/api/actions/{action['id']}")["settings"]["headers"][0]["value"]
        person(api.engine, "ed@example.com", account_id=api.account_id, role="editor")
        ui = sign_in(api.base_url, "ed@example.com")
        try:
            answer = ui.post(
                f"/ui/actions/{action['id']}/test-send",
                {
                    "contact_id": str(contact["contact"]["id"]),
                    "url": f"{elsewhere}/hook",
                    "method": "POST",
                    "headers": f"Authorization: {hint}",
                    "sections": "fields",
                },
            )
        finally:
            ui.close()
    assert answer.status_code == 422, answer.text
    assert "enter its value again" in answer.text
    assert receiver.got == []
