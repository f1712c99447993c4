"""The admin UI's role matrix and audit log, generated from its route table (SQLite and PostgreSQL).

Every page and form of the platform's UI is called by six personas: account A's owner, editor and
viewer, account B's owner (on A's ids), the operator (working in A) and an anonymous visitor. The
expected status follows from the role each route declares: anonymous GET → 303 to the login form,
anonymous POST → 401; a role too low → 403; B's owner on A's ids → 404, exactly like a missing id;
otherwise 200 or a 303 that is not an error. A route with no declared role, one missing from
:data:`CALLS` (which also says the role each route should need), or one whose declaration differs,
fails the test, so a new route cannot be forgotten. Every allowed change writes
exactly one audit row naming the person who made it; nothing else writes one.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx
import sqlalchemy as sa
from starlette.routing import Mount, Route

from contactsync.db.platform import audit_log, deliveries, endpoints
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.tenancy import people
from contactsync.tenancy.roles import OPERATOR, Role
from contactsync.web.app import Page, SecurityHeaders, page_table
from contactsync.web.identity import SIGNED_IN
from support.api import Api, Receiver, api_client, new_account
from support.listener import serve
from support.web import PASSWORD, Ui, person, sign_in

VIEWER, EDITOR, OWNER = Role.VIEWER.value, Role.EDITOR.value, Role.OWNER.value

OPERATOR_EMAIL = "operator@example.com"
PERSONAS = ("a_owner", "a_editor", "a_viewer", "b_owner", "operator", "anonymous")
LEVEL = {"a_owner": Role.OWNER, "a_editor": Role.EDITOR, "a_viewer": Role.VIEWER, "b_owner": Role.OWNER,
         "operator": Role.OWNER}  # fmt: skip
"""The role each signed-in persona has where it works (the operator is an owner in every account)."""
PUBLIC = {("GET", "/login"), ("POST", "/login")}
"""The only routes anyone may call."""
NOT_CHANGES = {("POST", "/logout"), ("POST", "/account/switch"), ("POST", "/ui/validate"),
               ("POST", "/ui/actions/{action_id:int}/preview"),
               ("POST", "/lists/{list_id:int}/import/preview")}  # fmt: skip
"""POSTs that change no data, so they write no audit row (signing out, switching account, checking a
template, previewing a request or an import); every other POST is a change."""
FRESH_SESSION = {("POST", "/logout"), ("POST", "/me/password")}
"""Routes that end the caller's session: called from a session of their own."""


@dataclass
class World:
    api: Api
    receiver_url: str
    ids: dict[str, int]
    emails: dict[str, str]
    user_ids: dict[str, int]
    counter: Iterator[int] = field(default_factory=itertools.count)

    def n(self) -> int:
        return next(self.counter)

    def url(self) -> str:
        return self.receiver_url

    def contact(self) -> int:
        """A new contact of A's list (its automation queues one pending delivery for it)."""
        made = self.api.ok("POST", f"/api/lists/{self.ids['list']}/contacts", 201,
                           json={"email": f"c{self.n()}@example.com"})  # fmt: skip
        return int(made["contact"]["id"])

    def delivery(self, state: str) -> int:
        contact_id = self.contact()
        d = deliveries.c
        with self.api.engine.begin() as conn:
            found = conn.execute(sa.select(d.id).where(d.contact_id == contact_id)).scalar_one()
            conn.execute(deliveries.update().where(d.id == found).values(state=state))
        return int(found)

    def action(self) -> int:
        made = self.api.ok("POST", f"/api/automations/{self.ids['editable']}/actions", 201,
                           json={"url": self.url()})  # fmt: skip
        return int(made["id"])

    def automation(self) -> int:
        body = {"list_id": self.ids["list"], "name": f"a{self.n()}", "trigger": {"event": "manual"}}
        return int(self.api.ok("POST", "/api/automations", 201, json=body)["id"])

    def spare_list(self) -> int:
        """A list no automation uses (it may be deleted)."""
        return int(self.api.ok("POST", "/api/lists", 201, json={"name": f"spare {self.n()}"})["id"])

    def field(self) -> int:
        """A field of A's list nothing uses (it may be deleted)."""
        body = {"name": f"Spare {self.n()}", "type": "text"}
        return int(self.api.ok("POST", f"/api/lists/{self.ids['list']}/fields", 201, json=body)["id"])

    def member(self) -> int:
        made = self.api.ok("POST", "/api/members", 201, json={"email": f"m{self.n()}@example.com"})
        return int(made["member"]["user_id"])

    def key(self) -> int:
        return int(self.api.ok("POST", "/api/keys", 201, json={"name": f"k{self.n()}"})["id"])

    def account(self, *, suspended: bool = False) -> int:
        now = datetime.now(UTC).replace(tzinfo=None)
        with self.api.engine.begin() as conn:
            made = people.create_account(conn, name=f"spare {self.n()}", now=now)
            if suspended:
                people.set_suspended(conn, made.id, suspended=True, now=now)
        return made.id

    def user(self, *, disabled: bool = False) -> int:
        now = datetime.now(UTC).replace(tzinfo=None)
        with self.api.engine.begin() as conn:
            made, _ = people.create_user(conn, email=f"u{self.n()}@example.com", password=None, now=now)
            if disabled:
                people.set_disabled(conn, made.id, disabled=True, now=now)
        return made.id


@dataclass(frozen=True)
class Call:
    path: str
    data: dict[str, Any] | None = None
    json: dict[str, Any] | None = None
    names_a: bool = False
    """True when the call names one of account A's ids (B's owner then gets 404)."""


def _settings_form(w: World) -> dict[str, Any]:
    return {
        "url": w.url(),
        "method": "POST",
        "content_type": "form",
        "sections": ["fields", "lead-score"],
    }


def _import_form(w: World) -> dict[str, Any]:
    """An import's final form as the preview page sends it: the file (base64) and the mapping."""
    csv = f"Email,City\nimported{w.n()}@example.com,Paris\n".encode()
    return {"csv": base64.b64encode(csv).decode(), "filename": "people.csv", "map:0": "email",
            "map:1": f"field:{w.ids['field']}"}  # fmt: skip


def _get(path: Callable[[World], str], *, names_a: bool = False) -> Callable[[World], Call]:
    return lambda w: Call(path(w), names_a=names_a)


CALLS: dict[tuple[str, str], tuple[str, Callable[[World], Call]]] = {
    ("GET", "/"): (VIEWER, _get(lambda w: "/")),
    ("POST", "/endpoints/enable"): (
        EDITOR,
        lambda w: Call("/endpoints/enable", {"endpoint_id": w.ids["endpoint"]}, names_a=True),
    ),
    ("GET", "/contacts"): (VIEWER, _get(lambda w: "/contacts?q=example")),
    ("GET", "/contacts/{contact_id:int}"): (
        VIEWER,
        _get(lambda w: f"/contacts/{w.ids['contact']}", names_a=True),
    ),
    ("GET", "/contacts/new"): (EDITOR, _get(lambda w: f"/contacts/new?list={w.ids['list']}", names_a=True)),
    ("POST", "/contacts/new"): (
        EDITOR,
        lambda w: Call(
            "/contacts/new", {"list_id": w.ids["list"], "email": f"ui{w.n()}@example.com"}, names_a=True
        ),
    ),
    ("POST", "/contacts/{contact_id:int}"): (
        EDITOR,
        lambda w: Call(
            f"/contacts/{w.ids['contact']}",
            {"phone": "+1 555 0100", "status": "subscribed", f"field:{w.ids['field']}": "Paris"},
            names_a=True,
        ),
    ),
    ("POST", "/contacts/{contact_id:int}/delete"): (
        EDITOR,
        lambda w: Call(f"/contacts/{w.contact()}/delete", {"confirm": "yes"}, names_a=True),
    ),
    ("GET", "/lists"): (VIEWER, _get(lambda w: "/lists")),
    ("POST", "/lists"): (EDITOR, lambda w: Call("/lists", {"name": f"list {w.n()}"})),
    ("POST", "/lists/{list_id:int}/fields"): (
        EDITOR,
        lambda w: Call(
            f"/lists/{w.ids['list']}/fields", {"name": f"Field {w.n()}", "type": "text"}, names_a=True
        ),
    ),
    ("GET", "/lists/{list_id:int}/import"): (
        EDITOR,
        _get(lambda w: f"/lists/{w.ids['list']}/import", names_a=True),
    ),
    ("POST", "/lists/{list_id:int}/import/preview"): (
        EDITOR,
        lambda w: Call(f"/lists/{w.ids['list']}/import/preview", _import_form(w), names_a=True),
    ),
    ("POST", "/lists/{list_id:int}/import"): (
        EDITOR,
        lambda w: Call(f"/lists/{w.ids['list']}/import", _import_form(w), names_a=True),
    ),
    ("POST", "/lists/{list_id:int}/rename"): (
        EDITOR,
        lambda w: Call(f"/lists/{w.ids['list']}/rename", {"name": "Customers"}, names_a=True),
    ),
    ("POST", "/lists/{list_id:int}/delete"): (
        EDITOR,
        lambda w: Call(f"/lists/{w.spare_list()}/delete", {"confirm": "yes"}, names_a=True),
    ),
    ("POST", "/fields/{field_id:int}"): (
        EDITOR,
        lambda w: Call(f"/fields/{w.ids['field']}", {"name": "City", "shortcode_key": "CITY"}, names_a=True),
    ),
    ("POST", "/fields/{field_id:int}/delete"): (
        EDITOR,
        lambda w: Call(f"/fields/{w.field()}/delete", {"confirm": "yes"}, names_a=True),
    ),
    ("GET", "/endpoints"): (VIEWER, _get(lambda w: "/endpoints")),
    ("POST", "/endpoints/disable"): (
        EDITOR,
        lambda w: Call(
            "/endpoints/disable", {"endpoint_id": w.ids["endpoint"], "reason": "maintenance"}, names_a=True
        ),
    ),
    ("POST", "/endpoints/limits"): (
        EDITOR,
        lambda w: Call(
            "/endpoints/limits",
            {"endpoint_id": w.ids["endpoint"], "max_in_flight": "5", "rate_limit_per_s": ""},
            names_a=True,
        ),
    ),
    ("POST", "/lead-status"): (
        EDITOR,
        lambda w: Call("/lead-status", {"min_score": ["0", "20", "50"], "label": ["Cold", "Warm", "Hot"]}),
    ),
    ("GET", "/keys"): (OWNER, _get(lambda w: "/keys")),
    ("POST", "/keys"): (OWNER, lambda w: Call("/keys", {"name": f"ui key {w.n()}", "role": "viewer"})),
    ("POST", "/keys/{key_id:int}/revoke"): (
        OWNER,
        lambda w: Call(f"/keys/{w.key()}/revoke", {}, names_a=True),
    ),
    ("GET", "/automations"): (VIEWER, _get(lambda w: "/automations")),
    ("GET", "/automations/new"): (
        EDITOR,
        _get(lambda w: f"/automations/new?list={w.ids['list']}", names_a=True),
    ),
    ("POST", "/automations/new"): (
        EDITOR,
        lambda w: Call(
            "/automations/new",
            {"list_id": w.ids["list"], "name": f"ui {w.n()}", "trigger": "manual"},
            names_a=True,
        ),
    ),
    ("GET", "/automations/{automation_id:int}"): (
        VIEWER,
        _get(lambda w: f"/automations/{w.ids['automation']}", names_a=True),
    ),
    ("POST", "/automations/{automation_id:int}"): (
        EDITOR,
        lambda w: Call(
            f"/automations/{w.ids['editable']}",
            {"name": f"renamed {w.n()}", "trigger": "manual"},
            names_a=True,
        ),
    ),
    ("POST", "/automations/{automation_id:int}/status"): (
        EDITOR,
        lambda w: Call(
            f"/automations/{w.automation()}/status", {"status": "active", "confirm": "yes"}, names_a=True
        ),
    ),
    ("GET", "/automations/{automation_id:int}/run"): (
        EDITOR,
        _get(lambda w: f"/automations/{w.ids['editable']}/run", names_a=True),
    ),
    ("POST", "/automations/{automation_id:int}/run"): (
        EDITOR,
        lambda w: Call(f"/automations/{w.automation()}/run", {"confirm": "yes"}, names_a=True),
    ),
    ("GET", "/automations/{automation_id:int}/resend"): (
        EDITOR,
        _get(lambda w: f"/automations/{w.ids['editable']}/resend", names_a=True),
    ),
    ("POST", "/automations/{automation_id:int}/resend"): (
        EDITOR,
        lambda w: Call(f"/automations/{w.automation()}/resend", {"confirm": "yes"}, names_a=True),
    ),
    ("POST", "/automations/{automation_id:int}/delete"): (
        EDITOR,
        lambda w: Call(f"/automations/{w.automation()}/delete", {"confirm": "yes"}, names_a=True),
    ),
    ("GET", "/runs/{run_id:int}"): (VIEWER, _get(lambda w: f"/runs/{w.ids['run']}", names_a=True)),
    ("GET", "/automations/{automation_id:int}/actions/new"): (
        EDITOR,
        _get(lambda w: f"/automations/{w.ids['editable']}/actions/new", names_a=True),
    ),
    ("POST", "/automations/{automation_id:int}/actions/new"): (
        EDITOR,
        lambda w: Call(f"/automations/{w.ids['editable']}/actions/new", _settings_form(w), names_a=True),
    ),
    ("GET", "/actions/{action_id:int}"): (
        VIEWER,
        _get(lambda w: f"/actions/{w.ids['action']}", names_a=True),
    ),
    ("POST", "/actions/{action_id:int}"): (
        EDITOR,
        lambda w: Call(f"/actions/{w.ids['editable_action']}", _settings_form(w), names_a=True),
    ),
    ("POST", "/actions/{action_id:int}/rotate"): (
        EDITOR,
        lambda w: Call(f"/actions/{w.ids['editable_action']}/rotate", {"confirm": "yes"}, names_a=True),
    ),
    ("POST", "/actions/{action_id:int}/delete"): (
        EDITOR,
        lambda w: Call(f"/actions/{w.action()}/delete", {"confirm": "yes"}, names_a=True),
    ),
    ("POST", "/ui/actions/{action_id:int}/reveal"): (
        OWNER,
        lambda w: Call(f"/ui/actions/{w.ids['action']}/reveal", {}, names_a=True),
    ),
    ("POST", "/ui/validate"): (
        VIEWER,
        lambda w: Call(
            "/ui/validate",
            json={"list_id": w.ids["list"], "url": "https://x.example/?e=[#EMAIL#]"},
            names_a=True,
        ),
    ),
    ("POST", "/ui/actions/{action_id:int}/preview"): (
        VIEWER,
        lambda w: Call(
            f"/ui/actions/{w.ids['action']}/preview",
            {**_settings_form(w), "contact_id": w.ids["contact"]},
            names_a=True,
        ),
    ),
    ("POST", "/ui/actions/{action_id:int}/test-send"): (
        EDITOR,
        lambda w: Call(
            f"/ui/actions/{w.ids['action']}/test-send",
            {**_settings_form(w), "contact_id": w.ids["contact"]},
            names_a=True,
        ),
    ),
    ("GET", "/deliveries"): (VIEWER, _get(lambda w: "/deliveries?state=pending")),
    ("POST", "/deliveries/recover"): (
        EDITOR,
        lambda w: Call(
            "/deliveries/recover",
            {"action_id": w.ids["action"], "since": "2000-01-01 00:00", "confirm": "yes"},
            names_a=True,
        ),
    ),
    ("GET", "/deliveries/{delivery_id:int}"): (
        VIEWER,
        _get(lambda w: f"/deliveries/{w.ids['delivery']}", names_a=True),
    ),
    ("POST", "/deliveries/{delivery_id:int}/retry"): (
        EDITOR,
        lambda w: Call(f"/deliveries/{w.delivery('failed')}/retry", {}, names_a=True),
    ),
    ("POST", "/deliveries/{delivery_id:int}/cancel"): (
        EDITOR,
        lambda w: Call(f"/deliveries/{w.delivery('pending')}/cancel", {"confirm": "yes"}, names_a=True),
    ),
    ("GET", "/members"): (OWNER, _get(lambda w: "/members")),
    ("POST", "/members"): (
        OWNER,
        lambda w: Call("/members", {"email": f"new{w.n()}@example.com", "role": "viewer"}),
    ),
    ("POST", "/members/{user_id:int}/role"): (
        OWNER,
        lambda w: Call(f"/members/{w.member()}/role", {"role": "editor"}, names_a=True),
    ),
    ("POST", "/members/{user_id:int}/remove"): (
        OWNER,
        lambda w: Call(f"/members/{w.member()}/remove", {}, names_a=True),
    ),
    ("GET", "/audit"): (OWNER, _get(lambda w: "/audit?action=list.")),
    ("GET", "/operator"): (OPERATOR, _get(lambda w: "/operator")),
    ("POST", "/operator/accounts"): (
        OPERATOR,
        lambda w: Call("/operator/accounts", {"name": f"made {w.n()}"}),
    ),
    ("POST", "/operator/accounts/{account_id:int}/suspend"): (
        OPERATOR,
        lambda w: Call(f"/operator/accounts/{w.account()}/suspend", {}),
    ),
    ("POST", "/operator/accounts/{account_id:int}/reactivate"): (
        OPERATOR,
        lambda w: Call(f"/operator/accounts/{w.account(suspended=True)}/reactivate", {}),
    ),
    ("POST", "/operator/users/{user_id:int}/disable"): (
        OPERATOR,
        lambda w: Call(f"/operator/users/{w.user()}/disable", {}),
    ),
    ("POST", "/operator/users/{user_id:int}/enable"): (
        OPERATOR,
        lambda w: Call(f"/operator/users/{w.user(disabled=True)}/enable", {}),
    ),
    ("POST", "/operator/users/{user_id:int}/reset-password"): (
        OPERATOR,
        lambda w: Call(f"/operator/users/{w.user()}/reset-password", {}),
    ),
    ("POST", "/logout"): (SIGNED_IN, lambda w: Call("/logout", {})),
    ("POST", "/account/switch"): (
        SIGNED_IN,
        lambda w: Call("/account/switch", {"account_id": w.ids["account"]}, names_a=True),
    ),
    ("GET", "/me/password"): (SIGNED_IN, _get(lambda w: "/me/password")),
    ("POST", "/me/password"): (
        SIGNED_IN,
        lambda w: Call("/me/password", {"current": PASSWORD, "new": PASSWORD}),
    ),
}


def expected(role: str, method: str, persona: str, names_a: bool) -> set[int]:
    """The statuses a persona may get from a route that needs ``role``."""
    ok = {200} if method == "GET" else {200, 303}
    if persona == "anonymous":
        return {303} if method == "GET" else {401}
    if role == OPERATOR:
        return ok if persona == "operator" else {403}
    if role != SIGNED_IN and not LEVEL[persona].allows(Role(role)):
        return {403}
    return {404} if persona == "b_owner" and names_a else ok


def web_routes(app: Any) -> list[tuple[str, str, str | None]]:
    """(method, path, declared role) of every route of the admin UI mounted on ``app``."""
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == "")
    assert isinstance(mount.app, SecurityHeaders)
    pages = {id(p) for p in page_table(mount.app)}
    found = []
    for route in mount.app.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Route):
            role = route.role if isinstance(route, Page) else None
            assert (id(route) in pages) == isinstance(route, Page)
            found += [(m, route.path, role) for m in sorted(route.methods or ()) if m != "HEAD"]
    return found


@contextmanager
def world(db_url: str) -> Iterator[World]:
    """Accounts A (with a list, contact, automations, actions, a delivery, an endpoint) and B, and the
    people of the personas, over the API app with the UI mounted."""
    receiver = Receiver()
    with ExitStack() as stack:
        hook = stack.enter_context(serve(receiver.app)) + "/hook"
        api = stack.enter_context(
            api_client(
                db_url,
                admin_password=PASSWORD,
                admin_email=OPERATOR_EMAIL,
                session_secret="s",
                allowed_cidrs=["127.0.0.0/8"],
            )
        )
        a = api.account_id
        b, _ = new_account(api.engine, "beta")
        lst = api.ok("POST", "/api/lists", 201, json={"name": "Customers"})
        on_create = {"event": "contact.created"}
        auto = api.ok("POST", "/api/automations", 201, json={"list_id": lst["id"], "name": "on create",
                      "trigger": on_create, "reentry": {"policy": "always"}})  # fmt: skip
        action = api.ok("POST", f"/api/automations/{auto['id']}/actions", 201, json={"url": hook})
        manual = {"list_id": lst["id"], "name": "editable", "trigger": {"event": "manual"}}
        editable = api.ok("POST", "/api/automations", 201, json=manual)
        editable_action = api.ok(
            "POST", f"/api/automations/{editable['id']}/actions", 201, json={"url": hook}
        )
        emails = {
            p: f"{p.replace('_', '.')}@example.com" for p in ("a_owner", "a_editor", "a_viewer", "b_owner")
        }
        user_ids = {
            p: person(api.engine, emails[p], account_id=a if p.startswith("a_") else b, role=p.split("_")[1])
            for p in emails
        }
        emails["operator"] = OPERATOR_EMAIL
        with api.engine.connect() as conn:
            op = people.find_user(conn, OPERATOR_EMAIL)
        assert op is not None
        assert op.operator
        user_ids["operator"] = op.id
        ids = {"account": a, "list": lst["id"], "automation": auto["id"], "action": action["id"],
               "editable": editable["id"], "editable_action": editable_action["id"]}  # fmt: skip
        w = World(api, hook, ids, emails, user_ids)
        city = {"name": "City", "type": "text", "shortcode_key": "CITY"}
        w.ids["field"] = api.ok("POST", f"/api/lists/{lst['id']}/fields", 201, json=city)["id"]
        w.ids["contact"] = w.contact()
        w.ids["run"] = api.ok("POST", f"/api/automations/{editable['id']}/runs", 202)["id"]
        w.ids["delivery"] = w.delivery("delivered")
        with api.engine.begin() as conn:
            key = endpoint_rows.EndpointKey(a, endpoint_rows.endpoint_key(hook))
            endpoint_rows.ensure(conn, [key])
            w.ids["endpoint"] = conn.execute(
                sa.select(endpoints.c.id).where(
                    endpoints.c.account_id == a, endpoints.c.endpoint == key.endpoint
                )
            ).scalar_one()
        yield w


def client_of(w: World, persona: str) -> Ui:
    if persona == "anonymous":
        return Ui(httpx.Client(base_url=w.api.base_url, timeout=60), "")
    ui = sign_in(w.api.base_url, w.emails[persona], PASSWORD)
    if persona == "operator":  # lands in A (the first account) anyway; say so
        assert ui.post("/account/switch", {"account_id": w.ids["account"]}).status_code == 303
    return ui


def user_rows(w: World) -> list[Any]:
    a = audit_log.c
    with w.api.engine.connect() as conn:
        query = sa.select(a.id, a.actor_id, a.actor_label, a.account_id, a.action).where(
            a.actor_kind == "user"
        )
        return list(conn.execute(query.order_by(a.id)))


def call(ui: Ui, method: str, c: Call) -> httpx.Response:
    if method == "GET":
        return ui.get(c.path)
    if c.json is not None:
        return ui.post(c.path, json=c.json)
    return ui.post(c.path, c.data)


def test_every_route_declares_a_role_and_has_a_call(db_url: str) -> None:
    with world(db_url) as w:
        table = web_routes(w.api.app)
    undeclared = [(m, p) for m, p, role in table if role is None and (m, p) not in PUBLIC]
    assert undeclared == [], "routes that declare no role"
    public = {(m, p) for m, p, role in table if role is None}
    assert public == PUBLIC
    missing = sorted({(m, p) for m, p, _ in table} - PUBLIC - set(CALLS))
    assert missing == [], "routes without an entry in CALLS"
    stale = sorted(set(CALLS) - {(m, p) for m, p, _ in table})
    assert stale == [], "CALLS entries without a route"
    drifted = [(m, p, role, CALLS[(m, p)][0]) for m, p, role in table if role and role != CALLS[(m, p)][0]]
    assert drifted == [], "routes that declare another role than the one expected here"


def test_role_matrix(db_url: str) -> None:
    with world(db_url) as w:
        table = [(m, p, role) for m, p, role in web_routes(w.api.app) if (m, p) not in PUBLIC]
        clients = {persona: client_of(w, persona) for persona in PERSONAS}
        wrong = []
        try:
            for (method, path, declared), persona in itertools.product(table, PERSONAS):
                role, make = CALLS[(method, path)]  # what the route should need (declared: what it says)
                assert declared is not None
                c = make(w)
                fresh = persona != "anonymous" and (method, path) in FRESH_SESSION
                ui = client_of(w, persona) if fresh else clients[persona]
                before = len(user_rows(w))
                answer = call(ui, method, c)
                if fresh:
                    ui.close()
                    if not clients[persona].signed_in():  # a new password ended every other session
                        clients[persona].close()
                        clients[persona] = client_of(w, persona)
                want = expected(role, method, persona, c.names_a)
                got = answer.status_code
                location = unquote(answer.headers.get("location", ""))
                if got not in want:
                    wrong.append((method, path, persona, got, sorted(want), answer.text[:200]))
                elif got == 303 and persona == "anonymous":
                    assert location.startswith("/login?next="), (path, location)
                elif got == 303:
                    assert "err=" not in location, (method, path, persona, location)
                written = user_rows(w)[before:]
                changed = got in {200, 303} and method == "POST" and persona != "anonymous"
                changed = changed and (method, path) not in NOT_CHANGES
                assert len(written) == (1 if changed else 0), (method, path, persona, written)
        finally:
            for ui in clients.values():
                ui.close()
        assert wrong == [], "\n".join(map(str, wrong))


def test_every_change_writes_one_audit_row_naming_its_actor(db_url: str) -> None:
    """Each mutating route, called by the least entitled persona allowed: one row, naming them."""
    with world(db_url) as w:
        table = [
            (m, p, CALLS[(m, p)][0])
            for m, p, _ in web_routes(w.api.app)
            if m == "POST" and (m, p) not in PUBLIC
        ]
        least = {Role.VIEWER.value: "a_viewer", Role.EDITOR.value: "a_editor", Role.OWNER.value: "a_owner",
                 OPERATOR: "operator", SIGNED_IN: "a_viewer"}  # fmt: skip
        clients = {persona: client_of(w, persona) for persona in set(least.values())}
        checked = []
        try:
            for method, path, role in table:
                persona = least[role]
                fresh = (method, path) in FRESH_SESSION
                ui = client_of(w, persona) if fresh else clients[persona]
                before = len(user_rows(w))
                answer = call(ui, method, CALLS[(method, path)][1](w))
                if fresh:
                    ui.close()
                    if not clients[persona].signed_in():  # a new password ended every other session
                        clients[persona].close()
                        clients[persona] = client_of(w, persona)
                assert answer.status_code in {200, 303}, (path, answer.status_code, answer.text[:300])
                written = user_rows(w)[before:]
                if (method, path) in NOT_CHANGES:
                    assert written == [], (path, written)
                    continue
                assert len(written) == 1, (path, written)
                row = written[0]
                assert (row.actor_id, row.actor_label) == (w.user_ids[persona], w.emails[persona]), path
                if path == "/me/password":  # the person's own, not the account's they work in
                    assert row.account_id is None, (path, row)
                elif role != OPERATOR:  # a change in the account the person works in
                    assert row.account_id == w.ids["account"], (path, row)
                checked.append(row.action)
        finally:
            for ui in clients.values():
                ui.close()
        assert len(checked) == len(set(checked)), "two routes record the same action"
