"""The role matrix on SQLite and PostgreSQL: every API route, read from the app's route table, called by
A's owner, editor and viewer keys, B's owner key, an operator key and nobody, answers what its role
says: 401 without a key, 403 below the role or for the wrong kind of key, 404 for another account's
ids (its own collection otherwise), success for whoever may."""

from __future__ import annotations

import pytest

from support.roles import (
    CALLERS,
    READ_ONLY_POSTS,
    TABLE,
    ApiRoute,
    World,
    api_routes,
    expected,
    succeeded,
)


@pytest.fixture(scope="module")
def routes(world: World) -> list[ApiRoute]:
    return api_routes(world.api.app)


def test_every_route_needs_exactly_one_role(routes: list[ApiRoute]) -> None:
    wrong = [(r.method, r.path, r.roles) for r in routes if len(r.roles) != 1]
    assert not wrong, f"routes without exactly one of Viewer/Editor/Owner/Operator: {wrong}"


def spec_role(method: str, path: str) -> str:
    """The role spec/accounts.md ("People") gives a route, written down apart from the code: the
    operator runs accounts and users; owners manage members, API keys, secrets and read the audit log;
    editors change things; viewers read."""
    if path.startswith(("/api/accounts", "/api/users")):
        return "operator"
    if path.startswith(("/api/keys", "/api/members", "/api/audit")) or path.endswith("/reveal"):
        return "owner"
    if method == "GET" or (method, path) in READ_ONLY_POSTS:
        return "viewer"
    return "editor"


def test_every_route_needs_the_role_the_spec_gives_it(routes: list[ApiRoute]) -> None:
    """The matrix checks that each route enforces the role it names; this, that it names the right one."""
    wrong = [
        (r.method, r.path, r.roles, spec_role(r.method, r.path))
        for r in routes
        if r.roles != (spec_role(r.method, r.path),)
    ]
    assert not wrong, wrong


def test_every_route_is_in_the_table(routes: list[ApiRoute]) -> None:
    """A new route fails here until the table says how to call it; a removed one, until it goes."""
    served = {(r.method, r.path) for r in routes}
    assert sorted(served - TABLE.keys()) == [], "add these routes to support.roles.TABLE"
    assert sorted(TABLE.keys() - served) == [], "these routes of support.roles.TABLE are gone"


@pytest.mark.parametrize("caller", CALLERS)
def test_role_matrix(world: World, routes: list[ApiRoute], caller: str) -> None:
    wrong = []
    for route in routes:
        call = TABLE[route.method, route.path](world)
        response = world.send(caller, call)
        want = expected(route, caller, call)
        ok = succeeded(route, response) if want is None else response.status_code == want
        if not ok:
            got = f"{response.status_code} {response.text[:200]}"
            wrong.append(f"{call.method} {call.path}: want {want or '2xx'}, got {got}")
    assert not wrong, f"{caller}:\n" + "\n".join(wrong)


def test_a_body_naming_the_other_accounts_contact_answers_404(world: World) -> None:
    """B's own action, previewed or test-sent for A's contact: 404, and nothing leaves for B's URL;
    B's own automation explained for A's contact: 404."""
    lst = world.ok("POST", "/api/lists", caller="other", json={"name": "b"})
    automation = {"list_id": lst["id"], "name": "b", "trigger": {"event": "manual"}}
    made = world.ok("POST", "/api/automations", caller="other", json=automation)
    action = world.ok(
        "POST", f"/api/automations/{made['id']}/actions", caller="other", json={"url": world.hook_url}
    )
    mine = world.ok(
        "POST", f"/api/lists/{lst['id']}/contacts", caller="other", json={"email": "b@example.com"}
    )
    for verb in ("preview", "test-send"):
        path = f"/api/actions/{action['id']}/{verb}"
        sent = len(world.receiver.got)
        theirs = world.clients["other"].post(path, json={"contact_id": world.ids["contact"]})
        assert theirs.status_code == 404, theirs.text
        assert theirs.json()["field"] == "contact_id"
        assert len(world.receiver.got) == sent
        assert world.ok("POST", path, caller="other", json={"contact_id": mine["contact"]["id"]})
    assert len(world.receiver.got) == sent + 1  # B's own contact's test send
    explained = world.clients["other"].get(
        f"/api/automations/{made['id']}/explain", params={"contact_id": world.ids["contact"]}
    )
    assert explained.status_code == 404, explained.text
    moved = {**automation, "list_id": world.ids["list"]}
    assert world.clients["other"].put(f"/api/automations/{made['id']}", json=moved).status_code in (404, 422)
