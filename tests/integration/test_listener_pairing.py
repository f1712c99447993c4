"""Pairing on the listener: secrets managed in its admin UI, refused requests shown (SQLite and PostgreSQL).

Everything goes through real HTTP: signed requests to the private path, and the admin UI signed in
with its password (the listener UI's only role), with its CSRF token on every change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa

from contactsync.db import listener as t
from contactsync.db.engine import create_engine
from contactsync.db.sealing import Keyring, generate_key
from contactsync.listener import secrets as store
from contactsync.listener.refusals import MAX_KEYS_PER_MINUTE, OTHERS, RefusalLog
from contactsync.wire.signing import generate_secret
from support.listener import SECRET, Listener, payload, signed, start_listener, wait_for
from support.web import PASSWORD, csrf_of, listener_sign_in

KEY = generate_key()
MARKER = "zq-body-marker@example.com"


@pytest.fixture
def listener(db_url: str) -> Iterator[Listener]:
    yield from start_listener(
        db_url,
        admin_password=PASSWORD,
        session_secret="s" * 32,
        secrets_key=KEY,
        listener_projection=False,
        listener_max_body_bytes=64 * 1024,
    )


def _admin(listener: Listener) -> httpx.Client:
    return listener_sign_in(listener.base + "/admin", PASSWORD)


def _post(admin: httpx.Client, path: str, **data: str) -> httpx.Response:
    token = csrf_of(admin.get("/secrets").text)
    return admin.post(path, data={"csrf_token": token, **data})


def _send(listener: Listener, secret: str, n: int, **headers: str) -> int:
    body = payload(n).to_form()
    sent = listener.post(body, **signed(body, msg_id=str(n), secret=secret), **headers)
    return sent.status_code


def _secret_id(listener: Listener, label: str) -> int:
    with listener.engine.connect() as conn:
        return int(conn.execute(sa.select(t.secrets.c.id).where(t.secrets.c.label == label)).scalar_one())


def test_secrets_added_rotated_and_removed_in_the_ui_apply_to_the_next_request(listener: Listener) -> None:
    new, newer = generate_secret(), generate_secret()
    with closing(_admin(listener)) as admin:
        page = admin.get("/secrets")
        assert page.status_code == 200
        assert "from configuration" in page.text  # the configured secret, read-only
        assert SECRET not in page.text
        assert _send(listener, new, 1001) == 401  # not known yet

        added = _post(admin, "/secrets", label="Welcome · action 7", secret=new)
        assert added.status_code == 303, added.text
        assert _send(listener, new, 1002) == 200  # no restart
        assert _send(listener, SECRET, 1003) == 200  # the configured one still works
        shown = admin.get("/secrets").text
        assert "Welcome · action 7" in shown
        assert new not in shown
        assert new[-4:] in shown
        with listener.engine.connect() as conn:
            stored = conn.execute(sa.select(t.secrets.c.secret)).scalar_one()
        assert stored.startswith("sealed:v1:")
        assert new not in stored
        assert Keyring.of([KEY]).open(stored) == new

        twice = _post(admin, "/secrets", label="Welcome · action 7", secret=generate_secret())
        assert twice.status_code == 303
        assert "err=" in twice.headers["location"]
        bad = _post(admin, "/secrets", label="x", secret="not-a-secret")
        assert "err=" in bad.headers["location"]

        sid = _secret_id(listener, "Welcome · action 7")
        rotated = _post(admin, f"/secrets/{sid}/rotate", secret=newer)
        assert rotated.status_code == 303
        assert "msg=" in rotated.headers["location"]
        assert _send(listener, newer, 1004) == 200
        assert _send(listener, new, 1005) == 200  # the previous one, during its grace period
        with listener.engine.connect() as conn:
            assert conn.execute(sa.select(t.secrets.c.previous_until_ms)).scalar_one() is not None

        removed = _post(admin, f"/secrets/{sid}/remove")
        assert removed.status_code == 303
        assert _send(listener, newer, 1006) == 401
        assert _send(listener, new, 1007) == 401
        assert _send(listener, SECRET, 1008) == 200

        # the UI's own rules: a change needs the CSRF token, and a signed-in session
        assert admin.post("/secrets", data={"label": "x", "secret": new}).status_code == 403
    anonymous = httpx.Client(base_url=listener.base + "/admin")
    with closing(anonymous):
        assert anonymous.post("/secrets", data={"label": "x", "secret": new}).status_code == 401
        assert anonymous.get("/secrets").status_code == 303
        assert anonymous.get("/refused").status_code == 303
    with listener.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.secrets)).scalar_one() == 0


def test_a_secret_added_by_another_process_is_accepted_after_the_refresh(listener: Listener) -> None:
    other = generate_secret()
    assert _send(listener, other, 2001) == 401
    with listener.engine.begin() as conn:  # as another listener process's admin UI would
        store.add(conn, Keyring.of([KEY]), label="from elsewhere", secret=other, now_ms=0)
    wait_for(lambda: _send(listener, other, 2002) == 200, timeout_s=20)


def _refusals(listener: Listener) -> list[dict[str, object]]:
    with listener.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t.refusals).order_by(t.refusals.c.id))]


def test_refused_requests_are_shown_with_reason_and_action_and_their_bodies_are_not_kept(
    listener: Listener,
) -> None:
    name = "Welcome → CRM · action 7"
    claim = {"X-Contactsync-Action": "7", "X-Contactsync-Action-Name": quote(name)}
    body = payload(3001, email=MARKER).to_form()
    wrong = generate_secret()
    assert listener.post(body, **signed(body, msg_id="3001", secret=wrong), **claim).status_code == 401
    unsigned = listener.post(body, **claim)
    assert unsigned.status_code == 401
    big = "x=" + "y" * (70 * 1024) + MARKER
    assert listener.post(big, **signed(big, msg_id="3002"), **claim).status_code == 413
    broken = f"transactionid=not-a-number&contact[email]={MARKER}"
    assert listener.post(broken, **signed(broken, msg_id="3003")).status_code == 422  # signed, not a sync
    wait_for(lambda: len(_refusals(listener)) >= 4)

    rows = _refusals(listener)
    reasons = {r["reason"]: r for r in rows}
    assert set(reasons) == {"no_match", "missing_header", "body_too_large", "invalid_payload"}
    assert reasons["no_match"]["action"] == "7"
    assert reasons["no_match"]["action_name"] == name
    assert reasons["no_match"]["source_address"] == "127.0.0.1"
    assert reasons["invalid_payload"]["secret_label"] == "from configuration"  # which secret signed it
    assert all(MARKER not in repr(r) for r in rows)  # no body, no part of one
    with listener.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.inbox)).scalar_one() == 0

    with closing(_admin(listener)) as admin:
        page = admin.get("/refused")
    assert page.status_code == 200
    text = re.sub(r"\s+", " ", page.text)
    assert "no signature matches a secret this listener knows" in text
    assert "Welcome → CRM · action 7" in text
    assert "larger than this listener accepts" in text
    assert text.index("invalid_payload") < text.index("no_match")  # newest first
    assert MARKER not in page.text


def test_a_flood_of_refusals_writes_a_bounded_number_of_rows(listener: Listener) -> None:
    wrong = generate_secret()
    body = payload(4001).to_form()
    headers = signed(body, msg_id="4001", secret=wrong)
    for _ in range(150):
        assert listener.post(body, **headers, **{"X-Contactsync-Action": "9"}).status_code == 401
    wait_for(lambda: sum(int(r["count"]) for r in _refusals(listener)) == 150)  # type: ignore[call-overload]
    assert len(_refusals(listener)) <= 2  # one per minute (the flood may straddle a minute)


def test_refusal_counts_stay_bounded_per_minute_however_many_senders(db_url: str) -> None:
    from contactsync.db.migrate import upgrade

    upgrade(db_url, side="listener")
    engine = create_engine(db_url)
    try:
        log = RefusalLog()
        minute = 1_700_000_040_000
        for i in range(3 * MAX_KEYS_PER_MINUTE):
            log.record("no_match", 401, now_ms=minute + i, source=f"10.0.{i // 250}.{i % 250}", action=str(i))
        assert log.flush(engine) == MAX_KEYS_PER_MINUTE + 1
        for i in range(50):  # more of the same minute: the same rows, counted up
            log.record("no_match", 401, now_ms=minute + 5000 + i, source=f"10.9.0.{i}", action="x")
        assert log.flush(engine) == 1
        assert log.flush(engine) == 0
        with engine.connect() as conn:
            rows = conn.execute(sa.select(t.refusals)).all()
        assert len(rows) == MAX_KEYS_PER_MINUTE + 1
        assert sum(r._mapping["count"] for r in rows) == 3 * MAX_KEYS_PER_MINUTE + 50
        overflow = [r for r in rows if r.source_address == OTHERS]
        assert len(overflow) == 1
        assert overflow[0]._mapping["count"] == 2 * MAX_KEYS_PER_MINUTE + 50
        log.record("no_match", 401, now_ms=minute + 60_000, source="10.0.0.1", action="0")  # a new minute
        assert log.flush(engine) == 1
    finally:
        engine.dispose()


def test_every_listener_page_needs_the_admin_session(listener: Listener) -> None:
    """The listener UI's one role is "signed in with its password": every page and form of its route
    table (Secrets and Refused among them) refuses a visitor, and a form refuses a missing CSRF token."""
    routes = _listener_routes()
    assert ("GET", "/secrets") in routes
    assert ("POST", "/secrets/{secret_id:int}/rotate") in routes
    assert ("GET", "/refused") in routes
    with httpx.Client(base_url=listener.base + "/admin") as anonymous, closing(_admin(listener)) as admin:
        for method, path in routes:
            url = re.sub(r"{(\w+)(:int)?}", "1", path)
            answer = anonymous.request(method, url)
            assert answer.status_code == (303 if method == "GET" else 401), (method, path)
            if method == "GET":
                assert "/login" in answer.headers["location"]
            else:
                assert admin.request(method, url, data={}).status_code == 403, (method, path)


def _listener_routes() -> list[tuple[str, str]]:
    """(method, path) of every page and form of the listener's admin UI, from its route table."""
    from contactsync.settings import Settings
    from contactsync.web.app import close_web_app, create_listener_web_app, page_table

    settings = Settings(admin_password=PASSWORD, session_secret="s" * 32, listener_database_url="sqlite://")
    app = create_listener_web_app(settings)
    try:
        return [(m, page.path) for page in page_table(app) for m in sorted(page.methods or ()) if m != "HEAD"]
    finally:
        close_web_app(app)


def test_recent_syncs_name_the_contact_and_the_sending_action(listener: Listener) -> None:
    name = "Relance «été» · CRM"
    claim = {"X-Contactsync-Action": "12", "X-Contactsync-Action-Name": quote(name)}
    body = payload(5001, email="ana@example.com").to_form()
    assert listener.post(body, **signed(body, msg_id="5001"), **claim).status_code == 200
    quiet = payload(5002, email="bo@example.com").to_form()
    assert listener.post(quiet, **signed(quiet, msg_id="5002")).status_code == 200  # names no sender

    with closing(_admin(listener)) as admin:
        recent = re.sub(r"\s+", " ", admin.get("/").text)
        with listener.engine.connect() as conn:
            tid = conn.execute(sa.select(t.inbox.c.transactionid).order_by(t.inbox.c.id)).scalars().first()
        detail = re.sub(r"\s+", " ", admin.get(f"/syncs/{tid}").text)
    ana = recent[recent.index("ana@example.com") :]
    assert ana.index(name) < ana.index("</tr>")  # the sender is named on its own row, decoded
    bo = recent[recent.index("bo@example.com") :]
    assert "not named" in bo[: bo.index("</tr>")]
    assert quote(name) not in recent
    assert 'id="sync-contact"' in detail
    assert "ana@example.com" in detail[detail.index('id="sync-contact"') :][:300]
    assert name in detail[detail.index('id="sync-sender"') :][:300]
