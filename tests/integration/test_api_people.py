"""People through the API on SQLite and PostgreSQL: the operator's accounts, users and first keys; an
owner's members; one-time passwords; the last owner; and sessions that end with a person's access."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from contactsync.api.app import bootstrap_operator
from contactsync.db import platform as t
from contactsync.settings import Settings
from contactsync.tenancy import people
from contactsync.tenancy.keys import create_key
from contactsync.tenancy.roles import Role
from support.api import Api, api_client
from support.people import live_sessions, plant_session


@dataclass
class Installation:
    api: Api
    ops: httpx.Client
    """An operator key's client."""
    ops_key_id: int

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )

    def sign_in(self, email: str, password: str) -> people.UserOut | None:
        with self.api.engine.connect() as conn:
            return people.authenticate(conn, email, password)

    def count(self, table: sa.Table) -> int:
        return self.api.count(table)


@pytest.fixture
def inst(db_url: str) -> Iterator[Installation]:
    with api_client(db_url) as api:
        now = datetime.now(UTC).replace(tzinfo=None)
        with api.engine.begin() as conn:
            key = create_key(conn, account_id=None, name="ops", role="operator", now=now)
        headers = {"Authorization": f"Bearer {key.key}"}
        with httpx.Client(base_url=api.base_url, headers=headers, timeout=60) as ops:
            yield Installation(api, ops, key.id)


def ok(client: httpx.Client, method: str, path: str, status: int = 200, **kw: Any) -> Any:
    response = client.request(method, path, **kw)
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def refused(client: httpx.Client, method: str, path: str, status: int, **kw: Any) -> dict[str, Any]:
    response = client.request(method, path, **kw)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_account_with_its_first_owner_and_a_one_time_password(inst: Installation) -> None:
    made = ok(
        inst.ops, "POST", "/api/accounts", 201, json={"name": " Acme ", "owner_email": " Ann@Example.COM "}
    )
    account = made["account"]
    assert account["name"] == "Acme"
    assert account["suspended_at"] is None
    owner = made["owner"]
    assert owner["member"]["email"] == "ann@example.com"
    assert owner["member"]["role"] == "owner"
    password = owner["one_time_password"]
    assert len(password) >= 12
    user = inst.sign_in("ANN@example.com", password)
    assert user is not None
    assert user.id == owner["member"]["user_id"]
    assert inst.sign_in("ann@example.com", password + "x") is None
    with inst.api.engine.connect() as conn:
        stored = conn.execute(sa.select(t.users.c.password_hash).where(t.users.c.id == user.id)).scalar_one()
    assert stored.startswith("$argon2")
    assert password not in stored
    # shown once: never in a read, and not handed out again when the person is added elsewhere
    for path in (f"/api/accounts/{account['id']}/members", f"/api/users/{user.id}", "/api/users"):
        assert password not in inst.ops.get(path).text
    again = ok(
        inst.ops, "POST", "/api/accounts", 201, json={"name": "Beta", "owner_email": "ann@example.com"}
    )
    assert again["owner"]["one_time_password"] is None
    assert again["owner"]["member"]["user_id"] == user.id
    assert [a["name"] for a in ok(inst.ops, "GET", "/api/accounts")] == ["acme", "Acme", "Beta"]
    assert ok(inst.ops, "GET", f"/api/accounts/{account['id']}")["name"] == "Acme"
    # without an owner; a bad owner email leaves no account behind
    assert ok(inst.ops, "POST", "/api/accounts", 201, json={"name": "Gamma"})["owner"] is None
    accounts = inst.count(t.accounts)
    refused(inst.ops, "POST", "/api/accounts", 422, json={"name": "Delta", "owner_email": "not-an-email"})
    refused(inst.ops, "POST", "/api/accounts", 422, json={"name": " "})
    assert inst.count(t.accounts) == accounts
    refused(inst.ops, "GET", "/api/accounts/999999", 404)


def test_the_operator_adds_members_and_keys_to_an_account(inst: Installation) -> None:
    account_id = ok(inst.ops, "POST", "/api/accounts", 201, json={"name": "Acme"})["account"]["id"]
    added = ok(
        inst.ops,
        "POST",
        f"/api/accounts/{account_id}/members",
        201,
        json={"email": "ed@example.com", "role": "editor"},
    )
    assert added["member"]["role"] == "editor"
    assert inst.sign_in("ed@example.com", added["one_time_password"]) is not None
    viewer = ok(
        inst.ops, "POST", f"/api/accounts/{account_id}/members", 201, json={"email": "vi@example.com"}
    )
    assert viewer["member"]["role"] == "viewer"  # the default
    members = ok(inst.ops, "GET", f"/api/accounts/{account_id}/members")
    assert [(m["email"], m["role"]) for m in members] == [
        ("ed@example.com", "editor"),
        ("vi@example.com", "viewer"),
    ]
    refused(inst.ops, "POST", f"/api/accounts/{account_id}/members", 409, json={"email": "ED@example.com"})
    refused(
        inst.ops,
        "POST",
        f"/api/accounts/{account_id}/members",
        422,
        json={"email": "x@example.com", "role": "admin"},
    )
    users = inst.count(t.users)
    refused(inst.ops, "POST", "/api/accounts/999999/members", 404, json={"email": "nobody@example.com"})
    assert inst.count(t.users) == users  # nobody was created for an account that does not exist

    owner_key = ok(
        inst.ops, "POST", f"/api/accounts/{account_id}/keys", 201, json={"name": "first", "role": "owner"}
    )
    assert owner_key["account_id"] == account_id
    assert owner_key["role"] == "owner"
    assert owner_key["key"].startswith("csk_")
    viewer_key = ok(
        inst.ops, "POST", f"/api/accounts/{account_id}/keys", 201, json={"name": "ro", "role": "viewer"}
    )
    editor_key = ok(inst.ops, "POST", f"/api/accounts/{account_id}/keys", 201, json={"name": "rw"})
    assert editor_key["role"] == "editor"  # the default
    with inst.client(owner_key["key"]) as owner, inst.client(viewer_key["key"]) as ro:
        assert {m["email"] for m in ok(owner, "GET", "/api/members")} == {"ed@example.com", "vi@example.com"}
        assert {k["name"] for k in ok(owner, "GET", "/api/keys")} == {"first", "ro", "rw"}
        assert ok(ro, "GET", "/api/lists")["items"] == []
        refused(ro, "POST", "/api/lists", 403, json={"name": "no"})
    for role in ("operator", "admin"):
        refused(inst.ops, "POST", f"/api/accounts/{account_id}/keys", 422, json={"name": "x", "role": role})
    refused(inst.ops, "POST", "/api/accounts/999999/keys", 404, json={"name": "x"})


def test_an_owner_manages_the_members_of_the_account(inst: Installation) -> None:
    made = ok(inst.ops, "POST", "/api/accounts", 201, json={"name": "Acme", "owner_email": "ann@example.com"})
    account_id, ann = made["account"]["id"], made["owner"]["member"]["user_id"]
    key = ok(inst.ops, "POST", f"/api/accounts/{account_id}/keys", 201, json={"name": "k", "role": "owner"})[
        "key"
    ]
    with inst.client(key) as owner:
        bob = ok(owner, "POST", "/api/members", 201, json={"email": " Bob@Example.com ", "role": "editor"})
        assert bob["member"]["email"] == "bob@example.com"
        assert inst.sign_in("bob@example.com", bob["one_time_password"]) is not None
        bob_id = bob["member"]["user_id"]
        refused(owner, "POST", "/api/members", 409, json={"email": "BOB@example.com", "role": "viewer"})
        for body in (
            {"email": "c@example.com", "role": "admin"},
            {"email": "c@example.com", "role": "operator"},
        ):
            refused(owner, "POST", "/api/members", 422, json=body)
        assert refused(owner, "POST", "/api/members", 422, json={"email": "no at sign"})["field"] == "email"
        refused(owner, "PATCH", f"/api/members/{bob_id}", 422, json={"role": "boss"})

        assert ok(owner, "PATCH", f"/api/members/{bob_id}", json={"role": "viewer"})["role"] == "viewer"
        roles = {m["email"]: m["role"] for m in ok(owner, "GET", "/api/members")}
        assert roles == {"ann@example.com": "owner", "bob@example.com": "viewer"}

        # the last owner stays: neither demoted nor removed, until there is another
        assert (
            refused(owner, "PATCH", f"/api/members/{ann}", 409, json={"role": "editor"})["error"]
            == "conflict"
        )
        refused(owner, "DELETE", f"/api/members/{ann}", 409)
        assert (
            ok(owner, "PATCH", f"/api/members/{ann}", json={"role": "owner"})["role"] == "owner"
        )  # no change
        ok(owner, "PATCH", f"/api/members/{bob_id}", json={"role": "owner"})
        assert ok(owner, "PATCH", f"/api/members/{ann}", json={"role": "editor"})["role"] == "editor"
        refused(owner, "DELETE", f"/api/members/{bob_id}", 409)  # bob is now the last owner
        assert ok(owner, "DELETE", f"/api/members/{ann}")["email"] == "ann@example.com"
        assert [m["email"] for m in ok(owner, "GET", "/api/members")] == ["bob@example.com"]
        refused(owner, "DELETE", f"/api/members/{ann}", 404)
        refused(owner, "PATCH", f"/api/members/{ann}", 404, json={"role": "viewer"})
        assert ok(inst.ops, "GET", f"/api/users/{ann}")["email"] == "ann@example.com"  # the user remains

        # someone who exists already joins without a new password
        back = ok(owner, "POST", "/api/members", 201, json={"email": "ann@example.com", "role": "viewer"})
        assert back["one_time_password"] is None
        assert back["member"]["user_id"] == ann
        actions = [
            e["action"] for e in ok(owner, "GET", "/api/audit", params={"target_type": "user"})["items"]
        ]
        assert actions == [
            "member.add",
            "member.remove",
            "member.role",
            "member.role",
            "member.role",
            "member.role",
            "member.add",
        ]


def test_another_accounts_owner_cannot_touch_these_members(inst: Installation) -> None:
    a = ok(inst.ops, "POST", "/api/accounts", 201, json={"name": "A", "owner_email": "ann@example.com"})
    b = ok(inst.ops, "POST", "/api/accounts", 201, json={"name": "B", "owner_email": "bea@example.com"})
    ann = a["owner"]["member"]["user_id"]
    b_key = ok(
        inst.ops, "POST", f"/api/accounts/{b['account']['id']}/keys", 201, json={"name": "k", "role": "owner"}
    )
    with inst.client(b_key["key"]) as other:
        refused(other, "PATCH", f"/api/members/{ann}", 404, json={"role": "viewer"})
        refused(other, "DELETE", f"/api/members/{ann}", 404)
        assert [m["email"] for m in ok(other, "GET", "/api/members")] == ["bea@example.com"]
        # an owner's key makes keys of its own account only, and cannot revoke the operator's
        refused(other, "POST", "/api/keys", 422, json={"name": "up", "role": "operator"})
        refused(other, "DELETE", f"/api/keys/{inst.ops_key_id}", 404)
        assert len(ok(inst.ops, "GET", "/api/accounts")) == 3  # the operator key still works
    members = ok(inst.ops, "GET", f"/api/accounts/{a['account']['id']}/members")
    assert [(m["email"], m["role"]) for m in members] == [("ann@example.com", "owner")]


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_below_owner_a_key_cannot_manage_members_or_keys(inst: Installation, role: str) -> None:
    account_id = ok(
        inst.ops, "POST", "/api/accounts", 201, json={"name": "A", "owner_email": "ann@example.com"}
    )["account"]["id"]
    ann = ok(inst.ops, "GET", f"/api/accounts/{account_id}/members")[0]["user_id"]
    made = ok(inst.ops, "POST", f"/api/accounts/{account_id}/keys", 201, json={"name": "k", "role": role})
    members, keys = inst.count(t.memberships), inst.count(t.api_keys)
    with inst.client(made["key"]) as low:
        for method, path, body in [
            ("GET", "/api/members", None),
            ("POST", "/api/members", {"email": "eve@example.com", "role": "owner"}),
            ("PATCH", f"/api/members/{ann}", {"role": "viewer"}),
            ("DELETE", f"/api/members/{ann}", None),
            ("GET", "/api/keys", None),
            ("POST", "/api/keys", {"name": "mine", "role": "owner"}),
            ("DELETE", f"/api/keys/{made['id']}", None),
            ("GET", "/api/audit", None),
        ]:
            error = refused(low, method, path, 403, json=body)
            assert error["error"] == "forbidden", (method, path)
        # the operator's routes are not an account key's either
        refused(low, "GET", "/api/accounts", 403)
        refused(low, "POST", f"/api/accounts/{account_id}/keys", 403, json={"name": "x", "role": "owner"})
    assert (inst.count(t.memberships), inst.count(t.api_keys)) == (members, keys)
    assert inst.count(t.users) == 1  # eve was not created


def test_removal_disabling_and_a_new_password_end_the_persons_sessions(inst: Installation) -> None:
    a = ok(inst.ops, "POST", "/api/accounts", 201, json={"name": "A", "owner_email": "ann@example.com"})
    b = ok(inst.ops, "POST", "/api/accounts", 201, json={"name": "B", "owner_email": "ann@example.com"})
    a_id, b_id = a["account"]["id"], b["account"]["id"]
    password = a["owner"]["one_time_password"]
    key = ok(inst.ops, "POST", f"/api/accounts/{a_id}/keys", 201, json={"name": "k", "role": "owner"})["key"]
    engine = inst.api.engine
    with inst.client(key) as owner:
        bob = ok(owner, "POST", "/api/members", 201, json={"email": "bob@example.com", "role": "editor"})
        bob_id = bob["member"]["user_id"]
        ok(inst.ops, "POST", f"/api/accounts/{b_id}/members", 201, json={"email": "bob@example.com"})
        bob_in_a, bob_in_b = plant_session(engine, bob_id, a_id), plant_session(engine, bob_id, b_id)
        ann = a["owner"]["member"]["user_id"]
        ann_in_a = plant_session(engine, ann, a_id)

        ok(owner, "PATCH", f"/api/members/{bob_id}", json={"role": "viewer"})  # a new role: next request
        assert live_sessions(engine, bob_in_a, bob_in_b, ann_in_a) == {bob_in_a, bob_in_b, ann_in_a}
        ok(owner, "DELETE", f"/api/members/{bob_id}")
        assert live_sessions(engine, bob_in_a, bob_in_b, ann_in_a) == {bob_in_b, ann_in_a}

    # disabled: every session ends and sign-in is refused; enabled again: the same password works
    assert ok(inst.ops, "POST", f"/api/users/{bob_id}/disable")["disabled_at"] is not None
    assert live_sessions(engine, bob_in_b) == set()
    assert inst.sign_in("bob@example.com", bob["one_time_password"]) is None
    assert ok(inst.ops, "POST", f"/api/users/{bob_id}/enable")["disabled_at"] is None
    assert inst.sign_in("bob@example.com", bob["one_time_password"]) is not None

    # a new password: sessions end, the old password stops working
    ann_in_b = plant_session(engine, ann, b_id)
    reset = ok(inst.ops, "POST", f"/api/users/{ann}/reset-password")
    assert live_sessions(engine, ann_in_a, ann_in_b) == set()
    assert inst.sign_in("ann@example.com", password) is None
    assert inst.sign_in("ann@example.com", reset["one_time_password"]) is not None
    refused(inst.ops, "POST", "/api/users/999999/disable", 404)


def test_users_of_the_installation(inst: Installation) -> None:
    chosen = ok(
        inst.ops,
        "POST",
        "/api/users",
        201,
        json={"email": "Op@Example.com", "password": "correct horse", "operator": True},
    )
    assert chosen["one_time_password"] is None
    op = chosen["user"]
    assert (op["email"], op["operator"]) == ("op@example.com", True)
    assert inst.sign_in("op@example.com", "correct horse") is not None
    made = ok(inst.ops, "POST", "/api/users", 201, json={"email": "u@example.com"})
    assert made["user"]["operator"] is False
    assert inst.sign_in("u@example.com", made["one_time_password"]) is not None
    refused(inst.ops, "POST", "/api/users", 409, json={"email": "U@example.com"})
    # a password is a password, whatever it looks like (only the configured admin password may be a hash)
    odd = "$argon2id$v=19$m=65536,t=3,p=4$bm90IGEgaGFzaA$bm90IGEgaGFzaCBlaXRoZXI"
    ok(inst.ops, "POST", "/api/users", 201, json={"email": "odd@example.com", "password": odd})
    assert inst.sign_in("odd@example.com", odd) is not None
    refused(inst.ops, "POST", "/api/users", 422, json={"email": "v@example.com", "password": "short"})
    refused(inst.ops, "POST", "/api/users", 422, json={"email": "v@example.com", "role": "owner"})
    emails = [u["email"] for u in ok(inst.ops, "GET", "/api/users")]
    assert emails == ["op@example.com", "u@example.com", "odd@example.com"]
    assert ok(inst.ops, "GET", f"/api/users/{op['id']}")["email"] == "op@example.com"
    refused(inst.ops, "GET", "/api/users/999999", 404)
    # the last active operator stays
    refused(inst.ops, "POST", f"/api/users/{op['id']}/disable", 409)
    other = ok(inst.ops, "POST", "/api/users", 201, json={"email": "op2@example.com", "operator": True})[
        "user"
    ]
    ok(inst.ops, "POST", f"/api/users/{op['id']}/disable")
    refused(inst.ops, "POST", f"/api/users/{other['id']}/disable", 409)


@pytest.mark.parametrize("hashed", [False, True])
def test_the_admin_password_bootstraps_the_operator_once(inst: Installation, hashed: bool) -> None:
    """CONTACTSYNC_ADMIN_PASSWORD, in clear or as its argon2 hash, makes the first operator."""
    secret = "correct horse battery"
    configured = people.hash_password(secret) if hashed else secret
    now = datetime.now(UTC).replace(tzinfo=None)
    bootstrap_operator(
        Settings(admin_password=configured, admin_email="Root@Example.com"), inst.api.engine, now=now
    )
    user = inst.sign_in("root@example.com", secret)
    assert user is not None
    assert user.operator
    if hashed:
        assert inst.sign_in("root@example.com", configured) is None  # the hash is not the password
    # there is an operator now: another password changes nothing
    bootstrap_operator(
        Settings(admin_password="another password", admin_email="x@example.com"), inst.api.engine, now=now
    )
    assert [u["email"] for u in ok(inst.ops, "GET", "/api/users")] == ["root@example.com"]
    assert inst.sign_in("root@example.com", secret) is not None


def test_two_owners_demoted_at_once_leave_one(inst: Installation) -> None:
    """The last-owner rule holds against a concurrent change: while one owner's demotion is under way
    (its transaction open), demoting the other waits for it and then finds the last owner."""
    made = ok(inst.ops, "POST", "/api/accounts", 201, json={"name": "A", "owner_email": "ann@example.com"})
    account_id, ann = made["account"]["id"], made["owner"]["member"]["user_id"]
    bob = ok(
        inst.ops,
        "POST",
        f"/api/accounts/{account_id}/members",
        201,
        json={"email": "bob@example.com", "role": "owner"},
    )
    key = ok(inst.ops, "POST", f"/api/accounts/{account_id}/keys", 201, json={"name": "k", "role": "owner"})[
        "key"
    ]
    with inst.client(key) as owner, ThreadPoolExecutor(1) as pool:
        with inst.api.engine.begin() as conn:
            people.change_role(conn, account_id, ann, Role.EDITOR)
            other = pool.submit(
                owner.patch, f"/api/members/{bob['member']['user_id']}", json={"role": "viewer"}
            )
            with contextlib.suppress(TimeoutError):
                other.result(timeout=2)  # without a lock it is done by now, and wrongly so
        assert other.result().status_code == 409, other.result().text
        roles = {m["email"]: m["role"] for m in ok(owner, "GET", "/api/members")}
    assert roles == {"ann@example.com": "editor", "bob@example.com": "owner"}


def test_two_operators_disabled_at_once_leave_one(inst: Installation) -> None:
    first, second = (
        ok(inst.ops, "POST", "/api/users", 201, json={"email": f"op{n}@example.com", "operator": True})[
            "user"
        ]["id"]
        for n in (1, 2)
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    with ThreadPoolExecutor(1) as pool:
        with inst.api.engine.begin() as conn:
            people.set_disabled(conn, first, disabled=True, now=now)
            other = pool.submit(inst.ops.post, f"/api/users/{second}/disable")
            with contextlib.suppress(TimeoutError):
                other.result(timeout=2)  # without a lock it is done by now, and wrongly so
        assert other.result().status_code == 409, other.result().text
    active = [u["email"] for u in ok(inst.ops, "GET", "/api/users") if u["disabled_at"] is None]
    assert active == ["op2@example.com"]
