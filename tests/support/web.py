"""Helpers for the platform admin UI tests: people in accounts, and a signed-in client of the UI
served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from contactsync.tenancy import people
from contactsync.tenancy.roles import Role

PASSWORD = "a password long enough"


def person(
    engine: sa.Engine,
    email: str,
    *,
    account_id: int | None = None,
    role: str = "viewer",
    operator: bool = False,
    password: str = PASSWORD,
) -> int:
    """A user (a member of ``account_id`` with ``role``, when given); their id."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        user, _ = people.create_user(conn, email=email, password=password, now=now, operator=operator)
        if account_id is not None:
            people.add_member(conn, account_id, email=email, role=Role(role), now=now)
    return user.id


def csrf_of(html: str) -> str:
    found = re.search(r'data-csrf="([^"]*)"', html) or re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found.group(1)


@dataclass
class Ui:
    """A browser-like client of the UI: its cookies and the session's CSRF token."""

    client: httpx.Client
    csrf: str

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        """A form POST carrying the CSRF token (JSON with ``json=``, the token in its header)."""
        if "json" in kw:
            return self.client.post(path, headers={"X-CSRF-Token": self.csrf}, **kw)
        return self.client.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kw)

    def signed_in(self) -> bool:
        return self.client.get("/me/password").status_code == 200

    def close(self) -> None:
        self.client.close()


def sign_in(base: str, email: str, password: str = PASSWORD, *, expect: int = 303) -> Ui:
    """Sign in through the login form; the client keeps the session cookie."""
    client = httpx.Client(base_url=base, timeout=60)
    form = client.get("/login")
    done = client.post(
        "/login", data={"csrf_token": csrf_of(form.text), "email": email, "password": password, "next": "/"}
    )
    assert done.status_code == expect, done.text[:2000]
    csrf = csrf_of(client.get("/me/password").text) if expect == 303 else ""
    return Ui(client, csrf)


def audit_actions(engine: sa.Engine, prefix: str = "") -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """``(action, actor label, target id, detail)`` of the people's audit rows, oldest first."""
    from contactsync.db.platform import audit_log

    a = audit_log.c
    query = sa.select(a.action, a.actor_label, a.target_id, a.detail).where(
        a.actor_kind == "user", a.action.startswith(prefix)
    )
    with engine.connect() as conn:
        return [(r.action, r.actor_label, r.target_id, r.detail) for r in conn.execute(query.order_by(a.id))]


def listener_sign_in(base: str, password: str) -> httpx.Client:
    """Sign in to a listener's admin UI (``base`` ends with its mount point, ``/admin``)."""
    client = httpx.Client(base_url=base, timeout=60)
    form = client.get("/login")
    done = client.post("/login", data={"csrf_token": csrf_of(form.text), "password": password, "next": ""})
    assert done.status_code == 303, done.text[:2000]
    return client
