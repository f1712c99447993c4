"""A stored credential never follows an action to another endpoint: moving the URL to a new host while
sending back a header's masked hint is refused (the value must be typed again), so an editor — who may
change actions but not reveal their secrets — cannot send them to a host of their choosing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.api import Api, api_client, automation_with_action


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
