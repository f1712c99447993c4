"""Two accounts doing random things through the real API (SQLite and PostgreSQL); after every step
nothing one can fetch or list, on any route of the app's route table, shows anything of the other's,
and every id of the other's answers 404 on every route that takes it.

Each account marks what it creates with a tag of its own (list and automation names, contact emails,
action URLs, header values, key names), so "shows anything of the other's" is a search for the
other's tag. Deletes make ids go away while deliveries that mention them stay: the id-reuse defect.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from support.api import Api, api_client, new_account

PARAM_KINDS = {
    "list_id": "lists",
    "contact_id": "contacts",
    "automation_id": "automations",
    "action_id": "actions",
    "delivery_id": "deliveries",
    "endpoint_id": "endpoints",
    "run_id": "runs",
    "key_id": "keys",
    "user_id": "members",
    "field_id": "fields",
}
"""What each path parameter of the API names; a route with any other parameter fails the test."""
REQUIRED_QUERY = {"/api/automations/{automation_id}/explain": {"contact_id": "contacts"}}
"""Query parameters a route cannot answer without, and the kind of id each one names."""
OPERATOR_ONLY = ("/api/accounts", "/api/users")
"""Installation-wide routes: an account key gets 403 there (test_api_roles covers them)."""
NO_BODY = {"application/json"}


def _tag() -> str:
    return "".join(random.Random().choices(string.ascii_lowercase, k=14))


@dataclass
class Account:
    tag: str
    client: httpx.Client
    ids: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in PARAM_KINDS.values()})
    gone: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in PARAM_KINDS.values()})
    disabled: set[int] = field(default_factory=set)
    n: int = 0

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.client.request(method, path, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        response = self.call(method, path, **kw)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def forget(self, kind: str, ident: int) -> None:
        self.ids[kind].remove(ident)
        self.gone[kind].append(ident)


def _routes(app: Any) -> list[tuple[str, str, list[str]]]:
    """Every operation of the app's route table, as its OpenAPI document lists them (FastAPI builds it
    from the routes; included routers are resolved lazily, so ``app.routes`` does not list them)."""
    found: list[tuple[str, str, list[str]]] = []
    for path, operations in app.openapi()["paths"].items():
        if path.startswith(OPERATOR_ONLY):
            continue
        params = re.findall(r"{(\w+)}", path)
        unknown = [p for p in params if p not in PARAM_KINDS]
        assert not unknown, f"{path}: add {unknown} to PARAM_KINDS"
        found.extend((method.upper(), path, params) for method in sorted(operations))
    assert len(found) >= 40, found  # the whole API, not a part of it
    return found


class TwoAccounts(RuleBasedStateMachine):
    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api
        self.routes = _routes(api.app)
        self.accounts = []
        for _ in range(2):
            tag = _tag()
            _, key = new_account(api.engine, tag)
            client = httpx.Client(
                base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            self.accounts.append(Account(tag, client))

    def teardown(self) -> None:
        for account in self.accounts:
            account.client.close()

    def pick(self, data: st.DataObject) -> tuple[Account, Account]:
        i = data.draw(st.integers(0, 1), label="account")
        return self.accounts[i], self.accounts[1 - i]

    def own(self, data: st.DataObject, me: Account, kind: str) -> int:
        return data.draw(st.sampled_from(me.ids[kind]), label=kind)

    # --- what the accounts do ---------------------------------------------------------------------

    @initialize()
    def each_account_syncs_its_new_contacts(self) -> None:
        """A list, an automation on contact.created with an action, and a first contact (a delivery)."""
        for i, me in enumerate(self.accounts):
            list_id = me.ok("POST", "/api/lists", json={"name": f"list-{me.tag}"})["id"]
            me.ids["lists"].append(list_id)
            self._automation(me, list_id, shared_host=bool(i), trigger="contact.created")
            me.n += 1
            contact = me.ok(
                "POST", f"/api/lists/{list_id}/contacts", json={"email": f"c0-{me.tag}@example.com"}
            )
            me.ids["contacts"].append(contact["contact"]["id"])
            self._sync_deliveries(me)

    @rule(data=st.data())
    def create_list(self, data: st.DataObject) -> None:
        me, _ = self.pick(data)
        made = me.ok("POST", "/api/lists", json={"name": f"list-{me.tag}"})
        me.ids["lists"].append(made["id"])
        me.ok("POST", f"/api/lists/{made['id']}/fields", json={"name": f"note {me.tag}", "type": "text"})

    @precondition(lambda self: any(a.ids["lists"] for a in self.accounts))
    @rule(data=st.data(), shared_host=st.booleans(), trigger=st.sampled_from(["contact.created", "manual"]))
    def create_automation_and_action(self, data: st.DataObject, shared_host: bool, trigger: str) -> None:
        me, _ = self.pick(data)
        if not me.ids["lists"]:
            return
        self._automation(me, self.own(data, me, "lists"), shared_host=shared_host, trigger=trigger)

    def _automation(self, me: Account, list_id: int, *, shared_host: bool, trigger: str) -> None:
        automation = me.ok(
            "POST",
            "/api/automations",
            json={"list_id": list_id, "name": f"auto-{me.tag}", "trigger": {"event": trigger}},
        )
        me.ids["automations"].append(automation["id"])
        host = "shared.example.com" if shared_host else f"h-{me.tag}.example.com"
        action = me.ok(
            "POST",
            f"/api/automations/{automation['id']}/actions",
            json={
                "url": f"https://{host}/in?who=[#EMAIL#]&t={me.tag}",
                "headers": [{"name": "Authorization", "value": f"Bearer tok-{me.tag}"}],
            },
        )
        me.ids["actions"].append(action["id"])
        self._sync_endpoints(me)

    @precondition(lambda self: any(a.ids["lists"] for a in self.accounts))
    @rule(data=st.data())
    def create_contact(self, data: st.DataObject) -> None:
        me, _ = self.pick(data)
        if not me.ids["lists"]:
            return
        me.n += 1
        made = me.ok(
            "POST",
            f"/api/lists/{self.own(data, me, 'lists')}/contacts",
            json={"email": f"c{me.n}-{me.tag}@example.com"},
        )
        me.ids["contacts"].append(made["contact"]["id"])
        self._sync_deliveries(me)

    @precondition(lambda self: any(a.ids["contacts"] for a in self.accounts))
    @rule(data=st.data())
    def event(self, data: st.DataObject) -> None:
        me, _ = self.pick(data)
        if not me.ids["contacts"]:
            return
        event = {"kind": "campaign.opened", "contact_id": self.own(data, me, "contacts"), "campaign_id": 7}
        me.ok("POST", "/api/events", json={"events": [event]})

    @precondition(lambda self: any(a.ids["contacts"] for a in self.accounts))
    @rule(data=st.data())
    def delete_contact(self, data: st.DataObject) -> None:
        me, _ = self.pick(data)
        if me.ids["contacts"]:
            ident = self.own(data, me, "contacts")
            me.ok("DELETE", f"/api/contacts/{ident}")
            me.forget("contacts", ident)

    @precondition(lambda self: any(a.ids["automations"] for a in self.accounts))
    @rule(data=st.data())
    def delete_automation(self, data: st.DataObject) -> None:
        me, _ = self.pick(data)
        if me.ids["automations"]:
            ident = self.own(data, me, "automations")
            for action in me.ok("GET", f"/api/automations/{ident}/actions"):
                me.forget("actions", action["id"])
            for run in me.ok("GET", f"/api/automations/{ident}/runs"):
                if run["id"] in me.ids["runs"]:
                    me.forget("runs", run["id"])
            me.ok("DELETE", f"/api/automations/{ident}")
            me.forget("automations", ident)

    @precondition(lambda self: any(a.ids["actions"] for a in self.accounts))
    @rule(data=st.data())
    def delete_action(self, data: st.DataObject) -> None:
        me, _ = self.pick(data)
        if me.ids["actions"]:
            ident = self.own(data, me, "actions")
            me.ok("DELETE", f"/api/actions/{ident}")
            me.forget("actions", ident)

    @precondition(lambda self: any(a.ids["automations"] for a in self.accounts))
    @rule(data=st.data())
    def manual_run(self, data: st.DataObject) -> None:
        me, _ = self.pick(data)
        if me.ids["automations"]:
            run = me.ok("POST", f"/api/automations/{self.own(data, me, 'automations')}/runs")
            if run["id"] not in me.ids["runs"]:
                me.ids["runs"].append(run["id"])

    @rule(data=st.data(), revoke=st.booleans())
    def keys(self, data: st.DataObject, revoke: bool) -> None:
        me, _ = self.pick(data)
        if revoke and me.ids["keys"]:
            ident = self.own(data, me, "keys")
            me.ok("DELETE", f"/api/keys/{ident}")
            me.forget("keys", ident)
        else:
            me.ids["keys"].append(me.ok("POST", "/api/keys", json={"name": f"key-{me.tag}"})["id"])

    @precondition(lambda self: any(a.ids["deliveries"] for a in self.accounts))
    @rule(data=st.data(), how=st.sampled_from(["retry", "cancel"]))
    def retry_or_cancel(self, data: st.DataObject, how: str) -> None:
        me, _ = self.pick(data)
        self._sync_deliveries(me)
        if me.ids["deliveries"]:
            response = me.call("POST", f"/api/deliveries/{self.own(data, me, 'deliveries')}/{how}")
            assert response.status_code in (200, 409), response.text

    @precondition(lambda self: any(a.ids["endpoints"] for a in self.accounts))
    @rule(data=st.data())
    def switch_endpoint(self, data: st.DataObject) -> None:
        me, _ = self.pick(data)
        if me.ids["endpoints"]:
            ident = self.own(data, me, "endpoints")
            how = "enable" if ident in me.disabled else "disable"
            me.ok("POST", f"/api/endpoints/{ident}/{how}")
            (me.disabled.discard if how == "enable" else me.disabled.add)(ident)

    def _sync_deliveries(self, me: Account) -> None:
        listed = me.ok("GET", "/api/deliveries", params={"limit": 200})["items"]
        me.ids["deliveries"] = sorted(d["id"] for d in listed)

    def _sync_endpoints(self, me: Account) -> None:
        me.ids["endpoints"] = sorted(e["id"] for e in me.ok("GET", "/api/endpoints"))

    # --- what must hold after every step ----------------------------------------------------------

    def _fill(self, path: str, params: list[str], account: Account) -> str | None:
        for param in params:
            have = account.ids[PARAM_KINDS[param]]
            if not have:
                return None
            path = path.replace("{" + param + "}", str(have[-1]))
        return path

    @invariant()
    def nothing_of_the_other_is_visible(self) -> None:
        for me, other in (self.accounts, self.accounts[::-1]):
            for method, path, params in self.routes:
                if method != "GET":
                    continue
                filled = self._fill(path, params, me)
                query = {k: me.ids[kind][-1:] for k, kind in REQUIRED_QUERY.get(path, {}).items()}
                if filled is None or not all(query.values()):
                    continue
                response = me.call("GET", filled, params={k: v[0] for k, v in query.items()})
                assert response.status_code == 200, (filled, response.text)
                assert other.tag not in response.text, f"{filled} shows the other account's data"

    @invariant()
    def every_id_of_the_other_answers_404(self) -> None:
        """Every route, reading or writing: the other's newest id of each kind and its newest deleted one."""
        self._foreign_ids_answer_404(methods={"GET", "POST", "PUT", "PATCH", "DELETE"}, gone=True)

    def _foreign_ids_answer_404(self, *, methods: set[str], gone: bool) -> None:
        for me, other in (self.accounts, self.accounts[::-1]):
            for method, path, params in self.routes:
                if method not in methods:
                    continue
                for target in params:
                    kind = PARAM_KINDS[target]
                    theirs = other.ids[kind][-1:] + (other.gone[kind][-1:] if gone else [])
                    for ident in theirs:
                        filled = path.replace("{" + target + "}", str(ident))
                        filled = self._fill(filled, [p for p in params if p != target], me) or filled
                        kw: dict[str, Any] = {} if method in ("GET", "DELETE") else {"json": {}}
                        query = {k: me.ids[kind][-1:] for k, kind in REQUIRED_QUERY.get(path, {}).items()}
                        if not all(query.values()):
                            continue  # no id of ours to fill the query with: the call cannot be made
                        kw["params"] = {k: v[0] for k, v in query.items()}
                        response = me.call(method, filled, **kw)
                        if response.status_code == 422 and method not in ("GET", "DELETE"):
                            continue  # the body is checked before the id: nothing is disclosed or done
                        assert response.status_code in (404, 405), (method, filled, response.text)

    @invariant()
    def endpoints_hold_only_their_own_switches(self) -> None:
        for me in self.accounts:
            if not me.ids["endpoints"]:
                continue
            shown = {e["id"]: e["enabled"] for e in me.ok("GET", "/api/endpoints")}
            assert {i for i, enabled in shown.items() if not enabled} == me.disabled


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with api_client(db_url) as client:
        yield client


@pytest.mark.slow
def test_two_accounts_never_see_each_other(api: Api) -> None:
    class OnThisApi(TwoAccounts):
        """The machine bound to this test's app: hypothesis builds machines from a class."""

        def __init__(self) -> None:
            super().__init__(api)

    run_state_machine_as_test(
        OnThisApi, settings=settings(max_examples=4, stateful_step_count=8, deadline=None)
    )
