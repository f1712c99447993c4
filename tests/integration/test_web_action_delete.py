"""Deleting an action in the admin UI: the page says how many pending deliveries it cancels, asks for a
confirmation, and they end ``cancelled`` (over real HTTP, SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from urllib.parse import unquote

import httpx

from support.api import api_client, automation_with_action

PASSWORD = "an operator's password"


def test_the_ui_confirms_with_the_count_and_cancels_the_pending_deliveries(db_url: str) -> None:
    with api_client(db_url, admin_password=PASSWORD, session_secret="s") as api:
        lst, _, action = automation_with_action(api, "https://h.example.com/in")
        for email in ("a@x.com", "b@x.com"):
            api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": email})
        with httpx.Client(base_url=api.base_url, timeout=30) as ui:
            form = ui.get("/login")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
            assert ui.post("/login", data={"csrf_token": csrf, "password": PASSWORD}).status_code == 303
            page = ui.get(f"/actions/{action['id']}")
            assert "cancel its 2 pending deliveries" in page.text
            csrf = re.search(r'data-csrf="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            unconfirmed = ui.post(f"/actions/{action['id']}/delete", data={"csrf_token": csrf})
            assert "confirm" in unquote(unconfirmed.headers["location"])
            assert api.get(f"/api/actions/{action['id']}").status_code == 200
            done = ui.post(f"/actions/{action['id']}/delete", data={"csrf_token": csrf, "confirm": "yes"})
            assert "2 pending deliveries cancelled" in unquote(done.headers["location"])
        assert api.get(f"/api/actions/{action['id']}").status_code == 404
        states = {d["state"] for d in api.ok("GET", "/api/deliveries")["items"]}
        assert states == {"cancelled"}
