"""Suspending an account (operator key) on SQLite and PostgreSQL: its keys answer 401 at once and its
members' sessions end, other accounts carry on; its deliveries wait, untouched, while another
account's go out, and on reactivation every one of them arrives exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from contactsync.db import platform as t
from contactsync.delivery import endpoints
from contactsync.tenancy.keys import create_key
from support.api import Api, api_client, new_account
from support.delivery import CountingReceiver
from support.people import dispatching, live_sessions, plant_session

CONTACTS = 6


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with api_client(db_url, allow_private_networks=True) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[CountingReceiver]:
    with CountingReceiver() as rec:
        yield rec


def _client(api: Api, key: str) -> httpx.Client:
    return httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _ok(client: httpx.Client, method: str, path: str, status: int = 200, **kw: Any) -> Any:
    response = client.request(method, path, **kw)
    assert response.status_code == status, response.text
    return response.json()


def _syncing(client: httpx.Client, url: str) -> int:
    """A list whose new contacts are synced to ``url``."""
    lst = _ok(client, "POST", "/api/lists", 201, json={"name": "L"})
    automation = {"list_id": lst["id"], "name": "sync", "trigger": {"event": "contact.created"}}
    made = _ok(client, "POST", "/api/automations", 201, json=automation)
    _ok(client, "POST", f"/api/automations/{made['id']}/actions", 201, json={"url": url})
    return int(lst["id"])


def _contacts(client: httpx.Client, list_id: int, n: int) -> list[str]:
    """``n`` new contacts of the list: the transactionids of the deliveries they queued."""
    tids = []
    for i in range(n):
        upsert = _ok(
            client, "POST", f"/api/lists/{list_id}/contacts", 201, json={"email": f"c{i}@example.com"}
        )
        tids += upsert["transactionids"]
    assert len(tids) == n
    return tids


def _queue(client: httpx.Client, url: str, n: int) -> list[str]:
    return _contacts(client, _syncing(client, url), n)


def _deliveries(api: Api, account_id: int) -> list[Any]:
    d = t.deliveries.c
    with api.engine.connect() as conn:
        return list(conn.execute(sa.select(t.deliveries).where(d.account_id == account_id).order_by(d.id)))


def _eventually(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _listening(api: Api) -> bool:
    """Whether a session of the database is LISTENing (the dispatcher's, on PostgreSQL)."""
    with api.engine.connect() as conn:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
        )
        return bool(conn.execute(sa.text(query)).scalar())


def test_a_suspended_accounts_deliveries_wait_and_go_out_once_on_reactivation(
    api: Api, receiver: CountingReceiver
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    with api.engine.begin() as conn:
        operator = create_key(conn, account_id=None, name="ops", role="operator", now=now).key
        a_viewer = create_key(conn, account_id=api.account_id, name="v", role="viewer", now=now).key
    b_id, b_key = new_account(api.engine, "B")
    with _client(api, operator) as ops, _client(api, b_key) as b, _client(api, a_viewer) as viewer:
        a = api.client
        # A's deliveries are queued first: a claim that ignored the suspension would take them first
        a_tids = _queue(a, f"{receiver.url}?account=a", CONTACTS)
        b_tids = _queue(b, f"{receiver.url}?account=b", CONTACTS)

        suspended = _ok(ops, "POST", f"/api/accounts/{api.account_id}/suspend")
        assert suspended["suspended_at"] is not None
        for client in (a, viewer):
            refused = client.get("/api/lists")
            assert refused.status_code == 401, refused.text
            assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert a.post("/api/lists", json={"name": "no"}).status_code == 401
        assert b.get("/api/lists").status_code == 200
        assert _ok(ops, "GET", f"/api/accounts/{api.account_id}")["suspended_at"] is not None

        # PostgreSQL: a long poll interval, so the reactivation's NOTIFY is what wakes the dispatcher
        pg = api.engine.dialect.name == "postgresql"
        with dispatching(api.engine, poll_interval_s=600.0 if pg else 0.05):
            _eventually(lambda: receiver.delivered() >= set(b_tids), "B's deliveries")
            if pg:
                _eventually(lambda: _listening(api), "the dispatcher's LISTEN")
            assert not receiver.delivered() & set(a_tids)
            held = _deliveries(api, api.account_id)
            assert [(str(r.transactionid), r.state, r.attempt_count) for r in held] == [
                (tid, "pending", 0) for tid in a_tids
            ]
            _eventually(lambda: all(r.state == "delivered" for r in _deliveries(api, b_id)), "B's rows")

            assert _ok(ops, "POST", f"/api/accounts/{api.account_id}/reactivate")["suspended_at"] is None
            assert a.get("/api/lists").status_code == 200
            _eventually(lambda: receiver.delivered() >= set(a_tids), "A's deliveries after reactivation")
            _eventually(
                lambda: all(r.state == "delivered" for r in _deliveries(api, api.account_id)), "A's rows"
            )
        with receiver.lock:
            seen = {tid: len(receiver.intervals[tid]) for tid in a_tids + b_tids}
        assert seen == dict.fromkeys(a_tids + b_tids, 1)  # each arrived exactly once
        listed = _ok(a, "GET", "/api/deliveries", params={"limit": 100})["items"]
        assert sorted(d["transactionid"] for d in listed) == sorted(a_tids)
        assert {d["attempt_count"] for d in listed} == {1}


def test_the_in_process_dispatcher_resumes_them_on_reactivation(
    db_url: str, receiver: CountingReceiver
) -> None:
    """``serve --with-worker``: the app's own dispatcher, polling only every 10 minutes, so that the
    reactivation itself must wake it (B's new contacts wake it while A is suspended)."""
    with api_client(db_url, run_dispatcher=True, allow_private_networks=True, poll_interval_s=600.0) as api:
        now = datetime.now(UTC).replace(tzinfo=None)
        with api.engine.begin() as conn:
            operator = create_key(conn, account_id=None, name="ops", role="operator", now=now).key
        b_id, b_key = new_account(api.engine, "B")
        with _client(api, operator) as ops, _client(api, b_key) as b:
            a = api.client
            a_list = _syncing(a, f"{receiver.url}?account=a")
            [endpoint] = _ok(a, "GET", "/api/endpoints")
            _ok(a, "POST", f"/api/endpoints/{endpoint['id']}/disable")  # holds A's deliveries for now
            a_tids = _contacts(a, a_list, CONTACTS)
            _ok(ops, "POST", f"/api/accounts/{api.account_id}/suspend")
            with api.engine.begin() as conn:  # the endpoint is back: only the suspension holds them now
                assert endpoints.enable(
                    conn, endpoints.EndpointKey(api.account_id, endpoint["endpoint"]), now=now
                )

            b_tids = _queue(b, f"{receiver.url}?account=b", CONTACTS)
            _eventually(lambda: receiver.delivered() >= set(b_tids), "B's deliveries")
            _eventually(lambda: all(r.state == "delivered" for r in _deliveries(api, b_id)), "B's rows")
            assert not receiver.delivered() & set(a_tids)
            assert {(r.state, r.attempt_count) for r in _deliveries(api, api.account_id)} == {("pending", 0)}

            _ok(ops, "POST", f"/api/accounts/{api.account_id}/reactivate")
            _eventually(lambda: receiver.delivered() >= set(a_tids), "A's deliveries after reactivation")
            with receiver.lock:
                seen = {tid: len(receiver.intervals[tid]) for tid in a_tids + b_tids}
            assert seen == dict.fromkeys(a_tids + b_tids, 1)


def test_suspension_ends_the_members_sessions_in_that_account_only(api: Api) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    with api.engine.begin() as conn:
        operator = create_key(conn, account_id=None, name="ops", role="operator", now=now).key
    b_id, _ = new_account(api.engine, "B")
    with _client(api, operator) as ops:
        member = _ok(
            ops, "POST", f"/api/accounts/{api.account_id}/members", 201, json={"email": "m@example.com"}
        )
        user_id = member["member"]["user_id"]
        _ok(ops, "POST", f"/api/accounts/{b_id}/members", 201, json={"email": "m@example.com"})
        boss = _ok(ops, "POST", "/api/users", 201, json={"email": "op@example.com", "operator": True})[
            "user"
        ]["id"]
        in_a = plant_session(api.engine, user_id, api.account_id)
        in_b = plant_session(api.engine, user_id, b_id)
        operator_in_a = plant_session(api.engine, boss, api.account_id)
        _ok(ops, "POST", f"/api/accounts/{api.account_id}/suspend")
        assert live_sessions(api.engine, in_a, in_b, operator_in_a) == {in_b, operator_in_a}
        # reactivating brings no session back; suspending twice changes nothing more
        _ok(ops, "POST", f"/api/accounts/{api.account_id}/reactivate")
        assert live_sessions(api.engine, in_a) == set()
        assert _ok(ops, "GET", f"/api/accounts/{b_id}")["suspended_at"] is None
        assert ops.post("/api/accounts/999999/suspend").status_code == 404
