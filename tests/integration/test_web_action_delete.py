"""Deleting an action in the admin UI: the page says how many pending deliveries it cancels, asks for a
confirmation, and they end ``cancelled`` (over real HTTP, SQLite and PostgreSQL)."""

from __future__ import annotations

from contextlib import closing
from urllib.parse import unquote

import sqlalchemy as sa

from contactsync.db.platform import audit_log
from support.api import api_client, automation_with_action
from support.web import sign_in

PASSWORD = "an operator's password"


def test_the_ui_confirms_with_the_count_and_cancels_the_pending_deliveries(db_url: str) -> None:
    with api_client(db_url, admin_password=PASSWORD, session_secret="s") as api:
        lst, _, action = automation_with_action(api, "https://h.example.com/in")
        for email in ("a@x.com", "b@x.com"):
            api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": email})
        with closing(sign_in(api.base_url, "admin@localhost", PASSWORD)) as ui:  # the bootstrapped operator
            page = ui.get(f"/actions/{action['id']}")
            assert "cancel its 2 pending deliveries" in page.text
            unconfirmed = ui.post(f"/actions/{action['id']}/delete")
            assert "confirm" in unquote(unconfirmed.headers["location"])
            assert api.get(f"/api/actions/{action['id']}").status_code == 200
            done = ui.post(f"/actions/{action['id']}/delete", {"confirm": "yes"})
            assert "2 pending deliveries cancelled" in unquote(done.headers["location"])
        assert api.get(f"/api/actions/{action['id']}").status_code == 404
        states = {d["state"] for d in api.ok("GET", "/api/deliveries")["items"]}
        assert states == {"cancelled"}
        a = audit_log.c
        row = sa.select(a.actor_label, a.detail).where(a.action == "action.delete", a.actor_kind == "user")
        with api.engine.connect() as conn:
            assert [tuple(r) for r in conn.execute(row)] == [("admin@localhost", {"cancelled": 2})]
