"""The audit log on SQLite and PostgreSQL: every change through the API leaves exactly one row naming
the key that made it, a refused call none; GET /api/audit filters and pages, and shows an account's
owner its own rows only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.tenancy.roles import OPERATOR, Role
from support import examples
from support.api import new_account
from support.roles import (
    TABLE,
    ApiRoute,
    Call,
    World,
    allowed_callers,
    api_routes,
    succeeded,
)


@pytest.fixture(scope="module")
def changes(world: World) -> list[ApiRoute]:
    found = [r for r in api_routes(world.api.app) if r.mutating]
    assert len(found) >= 35, found
    return found


def _account_of(
    route: ApiRoute, call: Call, caller: str, world: World, response: httpx.Response
) -> int | None:
    """The account an audit row must name: the caller's, or for the operator the account changed."""
    account_id = world.keys[caller].account_id
    if route.role != OPERATOR:
        return account_id
    if "{account_id}" in route.path:
        return int(call.path.split("/")[3])
    if route.path == "/api/accounts":
        return int(response.json()["account"]["id"])
    return None


def test_every_change_writes_one_row_naming_its_key(world: World, changes: list[ApiRoute]) -> None:
    wrong = []
    for route in changes:
        for caller in allowed_callers(route):
            call = TABLE[route.method, route.path](world)
            before = world.last_audit_id()
            response = world.send(caller, call)
            assert succeeded(route, response), (caller, call, response.text)
            rows = world.audit_rows(before)
            key = world.keys[caller]
            want = {
                "actor_kind": "key",
                "actor_id": key.id,
                "account_id": _account_of(route, call, caller, world, response),
            }
            got = [{k: getattr(r, k) for k in want} for r in rows]
            if got != [want] or not rows[0].action or not rows[0].target_type:
                wrong.append(
                    f"{caller} {call.method} {call.path}: {[r._asdict() for r in rows]}, want {want}"
                )
    assert not wrong, "\n".join(wrong)


def _refusals(route: ApiRoute) -> list[tuple[str, str]]:
    """(caller, how) pairs refused before anything changes: ``as is`` or ``invalid`` (the call made
    invalid, with a key that may make it)."""
    if route.role == OPERATOR:
        below = ["owner", "editor", "viewer"]
    else:
        below = [c for c in ("editor", "viewer") if not Role(c).allows(Role(route.role))] + ["operator"]
    return [(c, "as is") for c in [*below, "other", "anonymous"]] + [(allowed_callers(route)[0], "invalid")]


def test_a_refused_call_writes_nothing(world: World, changes: list[ApiRoute]) -> None:
    wrong = []
    for route in changes:
        for caller, how in _refusals(route):
            call = TABLE[route.method, route.path](world)
            if how == "invalid":
                call = call.invalid()
            elif caller == "other" and not call.names_a and route.role != OPERATOR:
                continue  # B acts in its own account: allowed, and audited there
            before = world.last_audit_id()
            response = world.send(caller, call)
            assert response.status_code in (401, 403, 404, 422), (caller, how, call, response.text)
            if rows := world.audit_rows(before):
                wrong.append(f"{caller} {how} {call.method} {call.path} -> {response.status_code}: {rows}")
    assert not wrong, "\n".join(wrong)


# --- reading the log ---------------------------------------------------------------------------------


def _client(world: World, key: str) -> httpx.Client:
    return httpx.Client(base_url=world.api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _log(client: httpx.Client, limit: int = 500, **filters: Any) -> list[dict[str, Any]]:
    """Every entry the filters select, page by page (newest first)."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {**filters, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get("/api/audit", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        found += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def _at(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def busy(world: World) -> dict[str, Any]:
    """A new account whose owner key ("alpha") and editor key ("beta") made a known set of changes."""
    account_id, _ = new_account(world.engine, "busy")
    alpha = world.ok(
        "POST", f"/api/accounts/{account_id}/keys", caller="operator", json={"name": "alpha", "role": "owner"}
    )
    beta = world.ok(
        "POST", f"/api/accounts/{account_id}/keys", caller="operator", json={"name": "beta", "role": "editor"}
    )
    with _client(world, alpha["key"]) as a, _client(world, beta["key"]) as b:
        for client in (a, b, a):
            lst = client.post("/api/lists", json={"name": "L"}).json()
            client.post(f"/api/lists/{lst['id']}/fields", json={"name": "F"})
            for n in range(2):
                client.post(
                    f"/api/lists/{lst['id']}/contacts", json={"email": f"{n}@{lst['id']}.example.com"}
                )
            auto = {"list_id": lst["id"], "name": "x", "trigger": {"event": "manual"}}
            client.post("/api/automations", json=auto)
        a.post("/api/keys", json={"name": "gamma"})
    return {"account_id": account_id, "alpha": alpha, "beta": beta}


def test_the_log_pages_through_every_row_once(world: World, busy: dict[str, Any]) -> None:
    with _client(world, busy["alpha"]["key"]) as owner:
        everything = _log(owner)
        assert len(everything) == 2 + 3 * 5 + 1  # two keys by the operator, five changes a round, a key
        assert [e["account_id"] for e in everything] == [busy["account_id"]] * len(everything)
        ids = [e["id"] for e in everything]
        assert ids == sorted(ids, reverse=True)
        for size in (1, 3, 7):
            assert _log(owner, limit=size) == everything
        assert everything[-2]["action"] == everything[-1]["action"] == "key.create"
        assert everything[-1]["actor_label"].startswith("key ")  # the operator's key
        assert owner.get("/api/audit", params={"cursor": "x"}).status_code == 422


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"actor": "(beta)"}, lambda e: e["actor_label"].endswith("(beta)")),
        ({"actor": "ALPHA"}, lambda e: "(alpha)" in e["actor_label"]),  # a substring, in any case
        ({"action": "contact."}, lambda e: e["action"].startswith("contact.")),
        ({"action": "list.create"}, lambda e: e["action"] == "list.create"),
        ({"action": "CONTACT.UP"}, lambda e: e["action"].startswith("contact.up")),
        ({"action": "list"}, lambda e: e["action"].startswith("list")),
        ({"action": "%"}, lambda e: False),  # no wildcard
        ({"target_type": "automation"}, lambda e: e["target_type"] == "automation"),
        (
            {"target_type": "automation", "actor": "beta"},
            lambda e: e["target_type"] == "automation" and "beta" in e["actor_label"],
        ),
    ],
)
def test_filters(world: World, busy: dict[str, Any], filters: dict[str, Any], keep: Any) -> None:
    with _client(world, busy["alpha"]["key"]) as owner:
        everything = _log(owner)
        want = [e for e in everything if keep(e)]
        assert _log(owner, **filters) == want
        assert _log(owner, limit=2, **filters) == want


def test_since_and_until(world: World, busy: dict[str, Any]) -> None:
    with _client(world, busy["alpha"]["key"]) as owner:
        everything = _log(owner)
        for cut in (everything[0], everything[len(everything) // 2], everything[-1]):
            at = _at(cut)
            assert _log(owner, since=cut["at"]) == [e for e in everything if _at(e) >= at]
            assert _log(owner, until=cut["at"]) == [e for e in everything if _at(e) < at]
        first, last = everything[-1]["at"], everything[0]["at"]
        window = [e for e in everything if _at(everything[-1]) <= _at(e) < _at(everything[0])]
        assert _log(owner, since=first, until=last, limit=4) == window
        assert owner.get("/api/audit", params={"since": "2026-01-01T00:00:00"}).status_code == 422  # zone


def test_an_owner_sees_no_other_accounts_rows(world: World, busy: dict[str, Any]) -> None:
    with _client(world, busy["alpha"]["key"]) as owner:
        theirs = world.ok("GET", "/api/audit", caller="owner")["items"]  # account A's
        assert theirs
        assert not {e["id"] for e in theirs} & {e["id"] for e in _log(owner)}
        assert _log(owner, actor="tests") == []  # A's owner key is named "tests"
        for entry in theirs[:10]:
            assert _log(owner, target_type=entry["target_type"], target_id=entry["target_id"] or "") == []


OPS = ("list", "key", "thresholds", "contact", "member")


@settings(max_examples=examples(25, 6))
@given(steps=st.lists(st.tuples(st.integers(0, 1), st.sampled_from(OPS)), min_size=1, max_size=10))
def test_interleaved_changes_of_two_accounts_stay_apart(world: World, steps: list[tuple[int, str]]) -> None:
    """Two fresh accounts change things in any order; each owner's log is its own changes, in order."""
    accounts = [new_account(world.engine, f"p{i}") for i in range(2)]
    clients = [_client(world, key) for _, key in accounts]
    done: list[list[tuple[str, str, str]]] = [[], []]
    lists: list[int | None] = [None, None]
    try:
        for i, op in steps:
            me = clients[i]
            if op == "contact" and lists[i] is None:
                op = "list"
            if op == "list":
                made = me.post("/api/lists", json={"name": "l"}).json()
                lists[i] = made["id"]
                done[i].append(("list.create", "list", str(made["id"])))
            elif op == "key":
                made = me.post("/api/keys", json={"name": "k"}).json()
                done[i].append(("key.create", "key", str(made["id"])))
            elif op == "thresholds":
                me.put("/api/lead-status-thresholds", json={"thresholds": [{"min_score": 0, "label": "x"}]})
                done[i].append(("lead_status.update", "account", str(accounts[i][0])))
            elif op == "contact":
                made = me.post(f"/api/lists/{lists[i]}/contacts", json={"email": f"{len(done[i])}@x.example"})
                done[i].append(("contact.upsert", "contact", str(made.json()["contact"]["id"])))
            else:
                made = me.post("/api/members", json={"email": world.email(), "role": "editor"}).json()
                done[i].append(("member.add", "user", str(made["member"]["user_id"])))
        for i, me in enumerate(clients):
            log = _log(me, limit=3)
            assert [(e["action"], e["target_type"], e["target_id"]) for e in reversed(log)] == done[i]
            assert {e["account_id"] for e in log} <= {accounts[i][0]}
            assert {e["actor_kind"] for e in log} <= {"key"}
    finally:
        for client in clients:
            client.close()
