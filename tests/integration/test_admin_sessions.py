"""Server-side sessions of both admin UIs, over real HTTP: a copied cookie stops working after logout
and after a password change (the listener's admin password; a platform user's own); idle and absolute
timeouts; ``Secure`` follows the public base URL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from typing import Any

import httpx
import pytest

from contactsync.automation.lists import create_account
from contactsync.db import create_engine
from contactsync.db.migrate import upgrade
from contactsync.settings import Settings
from contactsync.tenancy import people
from contactsync.web import create_web_app
from support.listener import serve
from support.web import csrf_of, person

PASSWORD = "correct horse battery staple"
EMAIL = "owner@example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def ui(db_url: str, side: str, clock: Clock, **settings: Any) -> Iterator[str]:
    """The admin UI of ``side`` over a migrated database at ``db_url``, served on 127.0.0.1."""
    upgrade(db_url, side=side)
    engine = create_engine(db_url)
    if side == "platform":  # an owner of an account, who signs in with EMAIL and PASSWORD
        with engine.begin() as conn:
            fresh = people.find_user(conn, EMAIL) is None
            account_id = create_account(conn, name="acme", now=datetime(2027, 1, 1)) if fresh else None
        if account_id is not None:
            person(engine, EMAIL, account_id=account_id, role="owner", password=PASSWORD)
    options = {
        "admin_password": PASSWORD,
        "database_url": db_url,
        "listener_database_url": db_url,
        **settings,
    }
    app = create_web_app(Settings(**options), engine=engine, side=side, clock_s=clock)  # type: ignore[arg-type]
    try:
        with serve(app) as base:
            yield base
    finally:
        engine.dispose()


def login(base: str, password: str = PASSWORD) -> httpx.Client:
    """Sign in to either side (the platform asks for the email too; the listener ignores it)."""
    client = httpx.Client(base_url=base, timeout=30)
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    form = {"csrf_token": csrf.group(1), "email": EMAIL, "password": password, "next": "/"}
    done = client.post("/login", data=form)
    assert done.status_code == 303, done.text
    return client


def signed_in(base: str, cookies: dict[str, str]) -> bool:
    with httpx.Client(base_url=base, cookies=cookies, timeout=30) as client:
        response = client.get("/")
    return response.status_code == 200


def _csrf(client: httpx.Client) -> str:
    return csrf_of(client.get("/").text)


@pytest.mark.parametrize("side", ["platform", "listener"])
def test_a_copied_cookie_stops_working_after_logout(db_url: str, side: str) -> None:
    with ui(db_url, side, Clock()) as base, closing(login(base)) as client:
        copied = dict(client.cookies)
        assert signed_in(base, copied)
        out = client.post("/logout", data={"csrf_token": _csrf(client)})
        assert out.status_code == 303
        assert not signed_in(base, copied)


def test_a_copied_cookie_stops_working_after_the_admin_password_changes(sqlite_url: str) -> None:
    clock = Clock()
    with ui(sqlite_url, "listener", clock) as base, closing(login(base)) as client:
        copied = dict(client.cookies)
        assert signed_in(base, copied)
    with ui(sqlite_url, "listener", clock, admin_password="a new password") as base:
        assert not signed_in(base, copied)
        login(base, "a new password").close()


def test_a_users_new_password_ends_their_other_sessions_but_not_this_one(db_url: str) -> None:
    with ui(db_url, "platform", Clock()) as base, closing(login(base)) as here, closing(login(base)) as there:
        elsewhere = dict(there.cookies)
        csrf = _csrf(here)
        wrong = here.post("/me/password", data={"csrf_token": csrf, "current": "not it", "new": "x" * 12})
        assert wrong.status_code == 400
        assert signed_in(base, elsewhere)
        changed = here.post("/me/password", data={"csrf_token": csrf, "current": PASSWORD, "new": "n" * 12})
        assert changed.status_code == 303, changed.text
        assert not signed_in(base, elsewhere)
        assert here.get("/").status_code == 200  # this browser got a fresh session
        login(base, "n" * 12).close()


def test_sessions_end_when_idle_and_after_the_absolute_timeout(sqlite_url: str) -> None:
    clock = Clock()
    timeouts = {"session_idle_timeout_s": 600.0, "session_absolute_timeout_s": 3600.0}
    with ui(sqlite_url, "platform", clock, **timeouts) as base:
        with closing(login(base)) as client:
            cookies = dict(client.cookies)
        clock.now += 601
        assert not signed_in(base, cookies)  # idle too long
        with closing(login(base)) as client:
            cookies = dict(client.cookies)
        for _ in range(6):  # in use every 9 minutes: never idle ...
            clock.now += 540
            assert signed_in(base, cookies)
        clock.now += 540
        assert not signed_in(base, cookies)  # ... but an hour after sign-in it ends


@pytest.mark.parametrize(
    ("side", "setting"), [("platform", "public_base_url"), ("listener", "listener_public_base_url")]
)
def test_cookies_are_secure_when_the_public_url_is_https(sqlite_url: str, side: str, setting: str) -> None:
    for public, secure in (("https://admin.example.com", True), ("http://127.0.0.1:8000", False)):
        with (
            ui(sqlite_url, side, Clock(), **{setting: public}) as base,
            httpx.Client(base_url=base) as client,
        ):
            page = client.get("/login")  # reached over plain http, as behind a TLS proxy
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert csrf is not None
            visitor = page.headers["set-cookie"]
            done = client.post(
                "/login",
                data={"csrf_token": csrf.group(1), "email": EMAIL, "password": PASSWORD},
                headers={"Cookie": visitor.split(";", 1)[0]},
            )
            assert done.status_code == 303
            for cookie in (visitor, done.headers["set-cookie"]):
                assert ("secure" in cookie.lower()) is secure, cookie
                assert "httponly" in cookie.lower()
                assert "samesite=lax" in cookie.lower()
