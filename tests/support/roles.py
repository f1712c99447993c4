"""The API's route table as the role and audit tests see it: who may call what, and how to call it.

:func:`api_routes` reads every operation under ``/api`` from the app itself, with the role its
dependencies name (``deps.needed_role``). :data:`TABLE` says, for each of them, how to build a valid
request whose path and body name account A's objects; a route the table does not know fails the
tests that walk it, so a new route cannot go unchecked. :class:`World` is one app on a real database
with account A (owner, editor and viewer keys), account B (its owner's key) and an operator key;
destructive calls get fresh targets, made with A's owner key just before the call.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute, iter_route_contexts

from contactsync.api.deps import needed_role
from contactsync.db import platform as t
from contactsync.tenancy.keys import create_key
from contactsync.tenancy.roles import OPERATOR, Role
from support.api import Api, Receiver, api_client, new_account
from support.listener import serve

DOCS = {"/api/openapi.json", "/api/docs", "/api/docs/assets"}
"""Routes under /api that are not operations of the API (public, no role)."""

CALLERS = ("owner", "editor", "viewer", "other", "operator", "anonymous")
"""A's owner, editor and viewer keys; B's owner key; an operator key; no key at all."""


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One operation (method and path template) of the app's route table."""

    method: str
    path: str
    roles: tuple[str, ...]
    """Every role dependency found under the route (exactly one on a well-formed route)."""
    status: int | None = None
    """The success status the route declares (none: 200, or whichever 2xx it picks)."""

    @property
    def role(self) -> str:
        assert len(self.roles) == 1, self
        return self.roles[0]

    @property
    def mutating(self) -> bool:
        """Changes something: every method but GET, except the read-only preview."""
        return self.method != "GET" and (self.method, self.path) not in READ_ONLY_POSTS


READ_ONLY_POSTS = {("POST", "/api/actions/{action_id}/preview")}


def _roles(dependant: Any) -> list[str]:
    found = []
    for dep in dependant.dependencies:
        role = needed_role(dep.call)
        if role is not None:
            found.append(role)
        found += _roles(dep)
    return found


def api_routes(app: Any) -> list[ApiRoute]:
    """Every operation under /api in the app's route table (included routers resolved), sorted."""
    routes = []
    for route in iter_route_contexts(app.routes):
        path = str(route.path)
        if not path.startswith("/api") or path in DOCS:
            continue
        assert isinstance(route.original_route, APIRoute), f"{path} is under /api but is not an API route"
        roles = tuple(_roles(route.dependant))
        status = route.status_code
        assert route.methods is not None, path
        routes += [ApiRoute(method, path, roles, status) for method in sorted(route.methods)]
    assert len(routes) >= 60, routes  # the whole API, not a part of it
    return sorted(routes, key=lambda r: (r.path, r.method))


@dataclass(frozen=True, slots=True)
class Key:
    id: int
    key: str
    account_id: int | None
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One request: ``names_a`` when its path or body names one of account A's objects."""

    method: str
    path: str
    template: str
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    names_a: bool = False

    def invalid(self) -> Call:
        """The same call made invalid before anything is done: ids 0 in the path, or a wrong body."""
        if "{" in self.template:
            path = re.sub(r"{\w+}", "0", self.template)
            return Call(method=self.method, path=path, template=self.template, json=self.json)
        return Call(method=self.method, path=self.path, template=self.template, json={"unexpected": True})


@dataclass
class World:
    """One app on one database: account A's keys and objects, B's owner key, an operator key."""

    api: Api
    hook_url: str
    receiver: Receiver
    """What arrived at ``hook_url`` (test sends; nothing dispatches the queued deliveries)."""
    keys: dict[str, Key]
    clients: dict[str, httpx.Client]
    ids: dict[str, int] = field(default_factory=dict)
    _n: Iterator[int] = field(default_factory=itertools.count)

    @property
    def engine(self) -> sa.Engine:
        return self.api.engine

    def name(self, what: str) -> str:
        return f"{what}-{next(self._n)}"

    def email(self) -> str:
        return f"{self.name('person')}@example.com"

    def send(self, caller: str, call: Call) -> httpx.Response:
        return self.clients[caller].request(
            call.method,
            call.path,
            json=call.json,
            params=call.params,
            content=call.content,
            headers=call.headers,
        )

    def ok(self, method: str, path: str, *, caller: str = "owner", **kw: Any) -> Any:
        response = self.clients[caller].request(method, path, **kw)
        assert response.is_success, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    # --- fresh targets, made with A's owner key (the operator's for accounts and users) -------------

    def new_contact(self) -> int:
        """A new contact of A's list; its automation queues one delivery for it."""
        made = self.ok("POST", f"/api/lists/{self.ids['list']}/contacts", json={"email": self.email()})
        return int(made["contact"]["id"])

    def new_delivery(self, *, cancelled: bool = False) -> int:
        contact = self.new_contact()
        [found] = self.ok("GET", "/api/deliveries", params={"contact_id": contact})["items"]
        if cancelled:
            self.ok("POST", f"/api/deliveries/{found['id']}/cancel")
        return int(found["id"])

    def new_list(self) -> int:
        return int(self.ok("POST", "/api/lists", json={"name": self.name("list")})["id"])

    def new_field(self) -> int:
        path = f"/api/lists/{self.ids['list']}/fields"
        return int(self.ok("POST", path, json={"name": self.name("field")})["id"])

    def new_automation(self) -> int:
        body = {"list_id": self.ids["list"], "name": self.name("automation"), "trigger": {"event": "manual"}}
        return int(self.ok("POST", "/api/automations", json=body)["id"])

    def new_action(self) -> int:
        path = f"/api/automations/{self.ids['scratch']}/actions"
        return int(self.ok("POST", path, json={"url": self.hook_url})["id"])

    def new_key(self) -> int:
        return int(self.ok("POST", "/api/keys", json={"name": self.name("key")})["id"])

    def new_member(self, role: str = "viewer") -> int:
        added = self.ok("POST", "/api/members", json={"email": self.email(), "role": role})
        return int(added["member"]["user_id"])

    def new_account(self, *, suspended: bool = False) -> int:
        made = self.ok("POST", "/api/accounts", caller="operator", json={"name": self.name("account")})
        account_id = int(made["account"]["id"])
        if suspended:
            self.ok("POST", f"/api/accounts/{account_id}/suspend", caller="operator")
        return account_id

    def new_user(self) -> int:
        made = self.ok("POST", "/api/users", caller="operator", json={"email": self.email()})
        return int(made["user"]["id"])

    def audit_rows(self, after_id: int) -> list[Any]:
        with self.engine.connect() as conn:
            query = sa.select(t.audit_log).where(t.audit_log.c.id > after_id).order_by(t.audit_log.c.id)
            return list(conn.execute(query))

    def last_audit_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(t.audit_log.c.id))).scalar() or 0)


Builder = Callable[[World], Call]


def _call(method: str, template: str, *, names_a: bool = False, **kw: Any) -> Builder:
    """A builder filling ``template``'s parameters: ``{x_id}`` from a fresh target when the keyword
    ``x_id`` names a World method, else from the world's shared ids (``ids[x]``)."""

    def build(w: World) -> Call:
        path = template
        for param in re.findall(r"{(\w+)}", template):
            source = kw.get(param, param.removesuffix("_id"))
            value = source(w) if callable(source) else w.ids[source]
            path = path.replace("{" + param + "}", str(value))
        body = kw.get("json")
        return Call(
            method=method,
            path=path,
            template=template,
            json=body(w) if callable(body) else body,
            params=kw.get("params", lambda _w: {})(w),
            content=kw.get("content", lambda _w: None)(w),
            headers=kw.get("headers", {}),
            names_a=names_a or "{" in template,
        )

    return build


def _fresh(kind: str, **kw: Any) -> Callable[[World], int]:
    return lambda w: int(getattr(w, f"new_{kind}")(**kw))


_SINCE = {"since": "2020-01-01T00:00:00Z"}
_THRESHOLDS = {"thresholds": [{"min_score": 0, "label": "Cold"}, {"min_score": 50, "label": "Hot"}]}

TABLE: dict[tuple[str, str], Builder] = {
    # lists and fields
    ("POST", "/api/lists"): _call("POST", "/api/lists", json=lambda w: {"name": w.name("list")}),
    ("GET", "/api/lists"): _call("GET", "/api/lists"),
    ("GET", "/api/lists/{list_id}"): _call("GET", "/api/lists/{list_id}"),
    ("PATCH", "/api/lists/{list_id}"): _call("PATCH", "/api/lists/{list_id}", json={"name": "shared"}),
    ("DELETE", "/api/lists/{list_id}"): _call("DELETE", "/api/lists/{list_id}", list_id=_fresh("list")),
    ("POST", "/api/lists/{list_id}/fields"): _call(
        "POST", "/api/lists/{list_id}/fields", json=lambda w: {"name": w.name("field")}
    ),
    ("GET", "/api/lists/{list_id}/fields"): _call("GET", "/api/lists/{list_id}/fields"),
    ("PATCH", "/api/fields/{field_id}"): _call("PATCH", "/api/fields/{field_id}", json={"name": "Plan"}),
    ("DELETE", "/api/fields/{field_id}"): _call("DELETE", "/api/fields/{field_id}", field_id=_fresh("field")),
    ("GET", "/api/lead-status-thresholds"): _call("GET", "/api/lead-status-thresholds"),
    ("PUT", "/api/lead-status-thresholds"): _call("PUT", "/api/lead-status-thresholds", json=_THRESHOLDS),
    # contacts and events
    ("POST", "/api/lists/{list_id}/contacts"): _call(
        "POST", "/api/lists/{list_id}/contacts", json=lambda w: {"email": w.email()}
    ),
    ("GET", "/api/lists/{list_id}/contacts"): _call("GET", "/api/lists/{list_id}/contacts"),
    ("GET", "/api/contacts/{contact_id}"): _call("GET", "/api/contacts/{contact_id}"),
    ("GET", "/api/contacts/{contact_id}/activity"): _call("GET", "/api/contacts/{contact_id}/activity"),
    ("PATCH", "/api/contacts/{contact_id}"): _call(
        "PATCH", "/api/contacts/{contact_id}", json={"phone": "+1 555 0100"}
    ),
    ("DELETE", "/api/contacts/{contact_id}"): _call(
        "DELETE", "/api/contacts/{contact_id}", contact_id=_fresh("contact")
    ),
    ("POST", "/api/lists/{list_id}/contacts/import"): _call(
        "POST",
        "/api/lists/{list_id}/contacts/import",
        content=lambda w: f"email\n{w.email()}\n".encode(),
        headers={"Content-Type": "text/csv"},
    ),
    ("POST", "/api/events"): _call(
        "POST",
        "/api/events",
        names_a=True,
        json=lambda w: {
            "events": [{"kind": "campaign.opened", "contact_id": w.ids["contact"], "campaign_id": 7}]
        },
    ),
    # automations and actions
    ("POST", "/api/automations"): _call(
        "POST",
        "/api/automations",
        names_a=True,
        json=lambda w: {
            "list_id": w.ids["list"],
            "name": w.name("automation"),
            "trigger": {"event": "manual"},
        },
    ),
    ("GET", "/api/automations"): _call("GET", "/api/automations"),
    ("GET", "/api/automations/{automation_id}"): _call("GET", "/api/automations/{automation_id}"),
    ("PUT", "/api/automations/{automation_id}"): _call(
        "PUT",
        "/api/automations/{automation_id}",
        automation_id="scratch",
        json=lambda w: {"list_id": w.ids["list"], "name": "scratch", "trigger": {"event": "manual"}},
    ),
    ("DELETE", "/api/automations/{automation_id}"): _call(
        "DELETE", "/api/automations/{automation_id}", automation_id=_fresh("automation")
    ),
    ("POST", "/api/automations/{automation_id}/actions"): _call(
        "POST",
        "/api/automations/{automation_id}/actions",
        automation_id="scratch",
        json=lambda w: {"url": w.hook_url},
    ),
    ("GET", "/api/automations/{automation_id}/actions"): _call(
        "GET", "/api/automations/{automation_id}/actions"
    ),
    ("GET", "/api/actions/{action_id}"): _call("GET", "/api/actions/{action_id}"),
    ("PUT", "/api/actions/{action_id}"): _call(
        "PUT", "/api/actions/{action_id}", json=lambda w: {"url": w.hook_url}
    ),
    ("DELETE", "/api/actions/{action_id}"): _call(
        "DELETE", "/api/actions/{action_id}", action_id=_fresh("action")
    ),
    ("POST", "/api/actions/{action_id}/rotate-secret"): _call(
        "POST", "/api/actions/{action_id}/rotate-secret"
    ),
    ("POST", "/api/actions/{action_id}/reveal"): _call("POST", "/api/actions/{action_id}/reveal"),
    ("POST", "/api/actions/{action_id}/recover"): _call(
        "POST", "/api/actions/{action_id}/recover", json=_SINCE
    ),
    ("POST", "/api/actions/{action_id}/preview"): _call(
        "POST", "/api/actions/{action_id}/preview", json=lambda w: {"contact_id": w.ids["contact"]}
    ),
    ("POST", "/api/actions/{action_id}/test-send"): _call(
        "POST", "/api/actions/{action_id}/test-send", json=lambda w: {"contact_id": w.ids["contact"]}
    ),
    # manual runs
    ("POST", "/api/automations/{automation_id}/runs"): _call(
        "POST", "/api/automations/{automation_id}/runs", automation_id=_fresh("automation")
    ),
    ("GET", "/api/automations/{automation_id}/runs"): _call("GET", "/api/automations/{automation_id}/runs"),
    ("GET", "/api/automations/{automation_id}/dry-run"): _call(
        "GET", "/api/automations/{automation_id}/dry-run"
    ),
    ("GET", "/api/automations/{automation_id}/explain"): _call(
        "GET", "/api/automations/{automation_id}/explain", params=lambda w: {"contact_id": w.ids["contact"]}
    ),
    ("GET", "/api/runs/{run_id}"): _call("GET", "/api/runs/{run_id}"),
    ("POST", "/api/runs/{run_id}/cancel"): _call("POST", "/api/runs/{run_id}/cancel"),
    # deliveries and endpoints
    ("GET", "/api/deliveries"): _call("GET", "/api/deliveries"),
    ("GET", "/api/deliveries/{delivery_id}"): _call("GET", "/api/deliveries/{delivery_id}"),
    ("POST", "/api/deliveries/{delivery_id}/retry"): _call(
        "POST", "/api/deliveries/{delivery_id}/retry", delivery_id=_fresh("delivery", cancelled=True)
    ),
    ("POST", "/api/deliveries/{delivery_id}/cancel"): _call(
        "POST", "/api/deliveries/{delivery_id}/cancel", delivery_id=_fresh("delivery")
    ),
    ("GET", "/api/endpoints"): _call("GET", "/api/endpoints"),
    ("GET", "/api/endpoints/{endpoint_id}"): _call("GET", "/api/endpoints/{endpoint_id}"),
    ("PUT", "/api/endpoints/{endpoint_id}/limits"): _call(
        "PUT", "/api/endpoints/{endpoint_id}/limits", json={"max_in_flight": 10}
    ),
    ("POST", "/api/endpoints/{endpoint_id}/disable"): _call("POST", "/api/endpoints/{endpoint_id}/disable"),
    ("POST", "/api/endpoints/{endpoint_id}/enable"): _call("POST", "/api/endpoints/{endpoint_id}/enable"),
    # the account's keys and members, its audit log
    ("POST", "/api/keys"): _call("POST", "/api/keys", json=lambda w: {"name": w.name("key")}),
    ("GET", "/api/keys"): _call("GET", "/api/keys"),
    ("DELETE", "/api/keys/{key_id}"): _call("DELETE", "/api/keys/{key_id}", key_id=_fresh("key")),
    ("GET", "/api/members"): _call("GET", "/api/members"),
    ("POST", "/api/members"): _call(
        "POST", "/api/members", json=lambda w: {"email": w.email(), "role": "viewer"}
    ),
    ("PATCH", "/api/members/{user_id}"): _call(
        "PATCH", "/api/members/{user_id}", user_id=_fresh("member"), json={"role": "editor"}
    ),
    ("DELETE", "/api/members/{user_id}"): _call("DELETE", "/api/members/{user_id}", user_id=_fresh("member")),
    ("GET", "/api/audit"): _call("GET", "/api/audit"),
    # the installation's accounts and users (operator)
    ("GET", "/api/accounts"): _call("GET", "/api/accounts"),
    ("POST", "/api/accounts"): _call(
        "POST", "/api/accounts", json=lambda w: {"name": w.name("account"), "owner_email": w.email()}
    ),
    ("GET", "/api/accounts/{account_id}"): _call("GET", "/api/accounts/{account_id}", account_id="a"),
    ("POST", "/api/accounts/{account_id}/suspend"): _call(
        "POST", "/api/accounts/{account_id}/suspend", account_id=_fresh("account")
    ),
    ("POST", "/api/accounts/{account_id}/reactivate"): _call(
        "POST", "/api/accounts/{account_id}/reactivate", account_id=_fresh("account", suspended=True)
    ),
    ("GET", "/api/accounts/{account_id}/members"): _call(
        "GET", "/api/accounts/{account_id}/members", account_id="a"
    ),
    ("POST", "/api/accounts/{account_id}/members"): _call(
        "POST",
        "/api/accounts/{account_id}/members",
        account_id="a",
        json=lambda w: {"email": w.email(), "role": "editor"},
    ),
    ("POST", "/api/accounts/{account_id}/keys"): _call(
        "POST",
        "/api/accounts/{account_id}/keys",
        account_id="a",
        json=lambda w: {"name": w.name("key"), "role": "viewer"},
    ),
    ("GET", "/api/accounts/{account_id}/keys"): _call(
        "GET", "/api/accounts/{account_id}/keys", account_id="a"
    ),
    ("DELETE", "/api/accounts/{account_id}/keys/{key_id}"): _call(
        "DELETE", "/api/accounts/{account_id}/keys/{key_id}", account_id="a", key_id=_fresh("key")
    ),
    ("GET", "/api/accounts/{account_id}/audit"): _call(
        "GET", "/api/accounts/{account_id}/audit", account_id="a"
    ),
    ("GET", "/api/users"): _call("GET", "/api/users"),
    ("POST", "/api/users"): _call("POST", "/api/users", json=lambda w: {"email": w.email()}),
    ("GET", "/api/users/{user_id}"): _call("GET", "/api/users/{user_id}", user_id=_fresh("user")),
    ("POST", "/api/users/{user_id}/disable"): _call(
        "POST", "/api/users/{user_id}/disable", user_id=_fresh("user")
    ),
    ("POST", "/api/users/{user_id}/enable"): _call(
        "POST", "/api/users/{user_id}/enable", user_id=_fresh("user")
    ),
    ("POST", "/api/users/{user_id}/reset-password"): _call(
        "POST", "/api/users/{user_id}/reset-password", user_id=_fresh("user")
    ),
}


def expected(route: ApiRoute, caller: str, call: Call) -> int | None:
    """The status ``caller`` must get: 401, 403 or 404, or ``None`` for success (2xx)."""
    if caller == "anonymous":
        return 401
    if route.role == OPERATOR:
        return None if caller == "operator" else 403
    if caller == "operator":
        return 403
    if caller == "other":
        return 404 if call.names_a else None
    return None if Role(caller).allows(Role(route.role)) else 403


def allowed_callers(route: ApiRoute) -> list[str]:
    """The keys of account A (or the operator) a route lets through."""
    if route.role == OPERATOR:
        return ["operator"]
    return [c for c in ("owner", "editor", "viewer") if Role(c).allows(Role(route.role))]


def succeeded(route: ApiRoute, response: httpx.Response) -> bool:
    """A 2xx, and the route's own status when it declares one."""
    return response.is_success and route.status in (None, response.status_code)


def _key(engine: sa.Engine, account_id: int | None, role: str) -> Key:
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        made = create_key(conn, account_id=account_id, name=f"{role} key", role=role, now=now)
    return Key(made.id, made.key, account_id, role)


def _key_of(engine: sa.Engine, key: str, account_id: int, role: str) -> Key:
    prefix = key.split("_")[1]
    with engine.connect() as conn:
        ident = conn.execute(sa.select(t.api_keys.c.id).where(t.api_keys.c.prefix == prefix)).scalar_one()
    return Key(int(ident), key, account_id, role)


@contextmanager
def open_world(db_url: str, **settings: Any) -> Iterator[World]:
    """The app on ``db_url`` with the keys of :data:`CALLERS` and A's shared objects: a list with a
    field and a contact, an automation on new contacts with its action to a receiver on 127.0.0.1
    (so A's new contacts queue deliveries; nothing sends them), a manual automation with a run."""
    receiver = Receiver()
    with ExitStack() as stack:
        hook = stack.enter_context(serve(receiver.app)) + "/hook"
        api = stack.enter_context(api_client(db_url, allow_private_networks=True, **settings))
        engine = api.engine
        b_id, b_key = new_account(engine, "other")
        keys = {
            "owner": _key_of(engine, api.key, api.account_id, "owner"),
            "editor": _key(engine, api.account_id, "editor"),
            "viewer": _key(engine, api.account_id, "viewer"),
            "other": _key_of(engine, b_key, b_id, "owner"),
            "operator": _key(engine, None, OPERATOR),
        }
        clients = {}
        for caller in CALLERS:
            headers = {"Authorization": f"Bearer {keys[caller].key}"} if caller in keys else {}
            clients[caller] = stack.enter_context(
                httpx.Client(base_url=api.base_url, headers=headers, timeout=60)
            )
        w = World(
            api=api, hook_url=hook, receiver=receiver, keys=keys, clients=clients, ids={"a": api.account_id}
        )
        w.ids["list"] = w.ok("POST", "/api/lists", json={"name": "shared"})["id"]
        w.ids["field"] = w.ok("POST", f"/api/lists/{w.ids['list']}/fields", json={"name": "Plan"})["id"]
        automation = {"list_id": w.ids["list"], "name": "new", "trigger": {"event": "contact.created"}}
        w.ids["automation"] = w.ok("POST", "/api/automations", json=automation)["id"]
        w.ids["action"] = w.ok("POST", f"/api/automations/{w.ids['automation']}/actions", json={"url": hook})[
            "id"
        ]
        w.ids["scratch"] = w.new_automation()
        w.ids["contact"] = w.new_contact()
        [delivery] = w.ok("GET", "/api/deliveries")["items"]
        w.ids["delivery"] = delivery["id"]
        [endpoint] = w.ok("GET", "/api/endpoints")
        w.ids["endpoint"] = endpoint["id"]
        w.ids["run"] = w.ok("POST", f"/api/automations/{w.ids['scratch']}/runs")["id"]
        yield w


@pytest.fixture(
    scope="module", params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One app and its accounts per database, shared by a module (each call makes its own targets)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('world') / 'platform.db'}"
    else:
        url = str(request.getfixturevalue("pg_module_url"))
    with open_world(url) as w:
        yield w
