"""A delayed action sends the contact as it is when the delay ends ("wait a day, then sync").

Through the real API, a real dispatcher running the send-time renderer, and a receiver on 127.0.0.1,
on SQLite and PostgreSQL; the platform's and the dispatcher's clock is one clock the tests move, so
"a day later" takes no time and nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from contactsync.api import create_app
from contactsync.automation.action_settings import SyncActionSettings
from contactsync.automation.freezing import payload_options
from contactsync.automation.payload_builder import build
from contactsync.automation.runtime import Runtime
from contactsync.automation.send_time import CONTACT_GONE, Renderer
from contactsync.db import create_engine
from contactsync.db.migrate import upgrade
from contactsync.db.platform import deliveries
from contactsync.delivery.config import DispatcherConfig
from contactsync.delivery.dispatcher import Dispatcher
from contactsync.delivery.interventions import NEVER_RENDERED
from contactsync.delivery.leases import Lane, claim
from contactsync.delivery.netguard import NetPolicy
from contactsync.delivery.outbox import enqueue
from contactsync.settings import Settings
from contactsync.wire.payload import SyncPayload
from support import examples
from support.api import Api, new_account
from support.delivery import FakeClock, migrated
from support.delivery import request as outbox_request
from support.listener import serve

DAY_S = 86400
FORM = "application/x-www-form-urlencoded"


@dataclass
class Arrival:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Hook:
    """A receiver recording every request by its ``webhook-id``; answers 500 as often as told first."""

    got: dict[str, list[Arrival]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def endpoint(self, request: Request) -> PlainTextResponse:
        tid = request.headers.get("webhook-id", "")
        path_qs = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        arrival = Arrival(request.method, path_qs, dict(request.headers), await request.body())
        with self.lock:
            self.got.setdefault(tid, []).append(arrival)
            failing = self.failures.get(tid, 0)
            self.failures[tid] = max(failing - 1, 0)
        return PlainTextResponse("no" if failing else "ok", status_code=500 if failing else 200)

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.endpoint, methods=["GET", "POST"])])

    def arrivals(self, tid: str) -> list[Arrival]:
        with self.lock:
            return list(self.got.get(tid, []))

    def wait(self, tid: str, count: int = 1) -> list[Arrival]:
        deadline = time.monotonic() + 30
        while len(found := self.arrivals(tid)) < count:
            assert time.monotonic() < deadline, f"{count} request(s) of {tid} never arrived: {found}"
            time.sleep(0.02)
        return found


@dataclass
class Stack:
    api: Api
    clock: FakeClock
    hook: Hook
    hook_base: str
    other_base: str
    rt: Runtime

    def delivery(self, tid: str) -> dict[str, Any]:
        found = self.api.ok("GET", "/api/deliveries", params={"limit": 200})["items"]
        (one,) = [d for d in found if d["transactionid"] == tid]
        return dict(self.api.ok("GET", f"/api/deliveries/{one['id']}"))

    def wait_state(self, tid: str, state: str) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while (found := self.delivery(tid))["state"] != state:
            assert time.monotonic() < deadline, f"{tid} never became {state}: {found}"
            time.sleep(0.02)
        return found

    def automation(self, *actions: dict[str, Any]) -> tuple[int, list[int]]:
        """A list with a City field, an automation on contact.created and ``actions``; (list, action ids)."""
        lst = self.api.ok("POST", "/api/lists", 201, json={"name": "Buyers"})
        self.api.ok("POST", f"/api/lists/{lst['id']}/fields", 201, json={"name": "City"})
        automation = self.api.ok(
            "POST",
            "/api/automations",
            201,
            json={"list_id": lst["id"], "name": "later", "trigger": {"event": "contact.created"}},
        )
        ids = [
            self.api.ok("POST", f"/api/automations/{automation['id']}/actions", 201, json=a)["id"]
            for a in actions
        ]
        return lst["id"], ids

    def contact(self, list_id: int, email: str, **fields: str) -> tuple[int, list[str]]:
        made = self.api.ok(
            "POST", f"/api/lists/{list_id}/contacts", 201, json={"email": email, "fields": fields}
        )
        return made["contact"]["id"], made["transactionids"]

    def edit(self, contact_id: int, **body: Any) -> None:
        self.api.ok("PATCH", f"/api/contacts/{contact_id}", json=body)


@contextmanager
def _dispatching(dispatcher: Dispatcher) -> Iterator[None]:
    """``dispatcher`` running in a thread of its own until the block ends."""
    ready = threading.Event()
    handles: dict[str, Any] = {}

    async def main() -> None:
        handles["loop"], handles["stop"] = asyncio.get_running_loop(), asyncio.Event()
        ready.set()
        await dispatcher.run(stop=handles["stop"])

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="dispatcher", daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield
    finally:
        handles["loop"].call_soon_threadsafe(handles["stop"].set)
        thread.join(60)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('render') / 'p.db'}"
    else:
        url = request.getfixturevalue("pg_module_url")
    upgrade(url)
    engine = create_engine(url)
    account_id, key = new_account(engine)
    clock = FakeClock(datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    settings = Settings(database_url=url, allowed_cidrs=["127.0.0.0/8"])
    rt = Runtime.create(settings, engine=engine, clock=clock)
    app = create_app(settings, engine=engine, runtime=rt)  # no dispatcher of its own: ours, on our clock
    dispatcher = Dispatcher(
        engine,
        config=DispatcherConfig(
            owner="render-tests",
            policy=NetPolicy(allowed_cidrs=("127.0.0.1/32",)),
            poll_interval_s=0.05,
            flush_interval_s=0.005,
            health_interval_s=3600.0,
            keyring=rt.keyring,
        ),
        clock=clock,
        renderer=Renderer(engine, rt),
    )
    hook, other = Hook(), Hook()
    try:
        with (
            serve(app) as base_url,
            serve(hook.app) as hook_base,
            serve(other.app) as other_base,
            httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client,
            _dispatching(dispatcher),
        ):
            api = Api(client, base_url, engine, account_id, key, app)
            yield Stack(api, clock, hook, hook_base, other_base, rt)
    finally:
        engine.dispose()


def _fields(body: bytes) -> dict[str, str]:
    return {f.name: f.value for f in SyncPayload.from_form(body).fields or []}


def test_the_contact_changed_during_the_delay_is_sent_as_it_is_when_the_delay_ends(stack: Stack) -> None:
    list_id, _ = stack.automation(
        {"url": f"{stack.hook_base}/post", "delay_s": DAY_S, "retry_schedule_s": [0, 60]},
        {"url": f"{stack.hook_base}/get?city=[#CITY#]&tid=[#TRANSACTIONID#]", "method": "GET",
         "delay_s": DAY_S},
    )  # fmt: skip
    contact_id, (post_tid, get_tid) = stack.contact(list_id, "ann@example.com", CITY="Paris")
    waiting = stack.delivery(post_tid)
    assert (waiting["state"], waiting["render_pending"], waiting["attempts"]) == ("pending", True, [])
    assert waiting["body"].startswith(f"transactionid={post_tid}&")  # as at the trigger, until the delay ends
    assert "Paris" in waiting["body"]
    stack.hook.failures[post_tid] = 1
    stack.clock.advance(3600)
    stack.edit(contact_id, fields={"CITY": "Lyon"}, phone="+33 1 23 45 67 89")
    assert stack.delivery(post_tid)["render_pending"] is True
    stack.clock.advance(DAY_S)

    (first,) = stack.hook.wait(post_tid)
    assert first.body.startswith(f"transactionid={post_tid}&".encode())
    assert _fields(first.body) == {"City": "Lyon"}
    assert SyncPayload.from_form(first.body).contact.phone == "+33 1 23 45 67 89"
    (got,) = stack.hook.wait(get_tid)
    assert (got.method, got.path_qs) == ("GET", f"/get?city=Lyon&tid={get_tid}")
    retrying = stack.wait_state(post_tid, "pending")
    assert retrying["attempts"]
    assert retrying["render_pending"] is False
    assert retrying["render_note"].startswith("rendered from the contact's data at ")
    assert "Lyon" in retrying["body"]

    stack.edit(contact_id, fields={"CITY": "Nice"})  # after the render: a retry sends the same bytes
    stack.clock.advance(120)
    first_again, second = stack.hook.wait(post_tid, 2)
    assert second.body == first_again.body == first.body
    assert second.headers["webhook-id"] == post_tid
    assert stack.wait_state(post_tid, "delivered")["body"] == first.body.decode()


def test_the_snapshot_setting_sends_the_contact_as_it_was_at_the_trigger(stack: Stack) -> None:
    list_id, _ = stack.automation(
        {"url": f"{stack.hook_base}/snap", "delay_s": DAY_S, "render": "at_trigger"}
    )
    contact_id, (tid,) = stack.contact(list_id, "bob@example.com", CITY="Paris")
    frozen = stack.delivery(tid)
    assert frozen["render_pending"] is False
    stack.edit(contact_id, fields={"CITY": "Lyon"})
    stack.clock.advance(DAY_S + 1)
    (got,) = stack.hook.wait(tid)
    assert _fields(got.body) == {"City": "Paris"}
    assert got.body.decode() == frozen["body"]
    assert stack.wait_state(tid, "delivered")["render_note"] is None


def test_a_contact_deleted_during_the_delay_is_not_sent(stack: Stack) -> None:
    list_id, _ = stack.automation({"url": f"{stack.hook_base}/gone", "delay_s": DAY_S})
    contact_id, (tid,) = stack.contact(list_id, "cy@example.com", CITY="Paris")
    stack.api.ok("DELETE", f"/api/contacts/{contact_id}", 204)
    stack.clock.advance(DAY_S + 1)
    cancelled = stack.wait_state(tid, "cancelled")
    assert (cancelled["render_note"], cancelled["last_error"]) == (CONTACT_GONE, CONTACT_GONE)
    assert cancelled["attempts"] == []
    assert stack.hook.arrivals(tid) == []


def test_an_action_moved_to_another_endpoint_keeps_the_delivery_and_its_trigger_request(
    stack: Stack,
) -> None:
    list_id, (action_id,) = stack.automation(
        {"url": f"{stack.hook_base}/moving?c=[#CITY#]", "method": "GET", "delay_s": DAY_S,
         "headers": [{"name": "X-Api-Key", "value": "for-the-first-host"}]}
    )  # fmt: skip
    contact_id, (tid,) = stack.contact(list_id, "dee@example.com", CITY="Paris")
    stack.edit(contact_id, fields={"CITY": "Lyon"})
    moved = {"url": f"{stack.other_base}/moving?c=[#CITY#]", "method": "GET", "delay_s": DAY_S}
    stack.api.ok("PUT", f"/api/actions/{action_id}", json=moved)
    stack.clock.advance(DAY_S + 1)
    (got,) = stack.hook.wait(tid)
    assert got.path_qs == "/moving?c=Paris"
    assert got.headers["x-api-key"] == "for-the-first-host"
    note = stack.wait_state(tid, "delivered")["render_note"]
    assert note.startswith("sent as at the trigger")
    assert stack.other_base in note


def test_a_cancelled_delivery_waiting_for_its_delay_is_never_rendered(stack: Stack) -> None:
    list_id, _ = stack.automation({"url": f"{stack.hook_base}/cancel", "delay_s": DAY_S})
    contact_id, (tid,) = stack.contact(list_id, "eve@example.com", CITY="Paris")
    delivery_id = stack.delivery(tid)["id"]
    cancelled = stack.api.ok("POST", f"/api/deliveries/{delivery_id}/cancel")
    assert (cancelled["render_pending"], cancelled["render_note"]) == (False, NEVER_RENDERED)
    stack.edit(contact_id, fields={"CITY": "Lyon"})
    stack.api.ok("POST", f"/api/deliveries/{delivery_id}/retry")
    (got,) = stack.hook.wait(tid)
    assert _fields(got.body) == {"City": "Paris"}


def test_a_manual_run_of_a_delayed_action_renders_when_the_delay_ends(stack: Stack) -> None:
    lst = stack.api.ok("POST", "/api/lists", 201, json={"name": "Run"})
    stack.api.ok("POST", f"/api/lists/{lst['id']}/fields", 201, json={"name": "City"})
    automation = stack.api.ok(
        "POST",
        "/api/automations",
        201,
        json={"list_id": lst["id"], "name": "m", "trigger": {"event": "manual"}},
    )
    action = {"url": f"{stack.hook_base}/run?c=[#CITY#]", "method": "GET", "delay_s": DAY_S}
    stack.api.ok("POST", f"/api/automations/{automation['id']}/actions", 201, json=action)
    contact_id, none = stack.contact(lst["id"], "run@example.com", CITY="Paris")
    assert none == []
    run = stack.api.ok("POST", f"/api/automations/{automation['id']}/runs", 202, json={})
    deadline = time.monotonic() + 30
    while stack.api.ok("GET", f"/api/runs/{run['id']}")["state"] != "completed":
        assert time.monotonic() < deadline, "the manual run did not complete"
        time.sleep(0.02)
    (queued,) = stack.api.ok("GET", "/api/deliveries", params={"automation_id": automation["id"]})["items"]
    assert queued["render_pending"] is True
    stack.edit(contact_id, fields={"CITY": "Lyon"})
    stack.clock.advance(DAY_S + 1)
    (got,) = stack.hook.wait(queued["transactionid"])
    assert got.path_qs == "/run?c=Lyon"


EDITS = st.lists(
    st.fixed_dictionaries(
        {"fields": st.fixed_dictionaries({"CITY": st.text("abcé &=[]%+", max_size=8)})},
        optional={"phone": st.sampled_from(["", "+1 555 0100", "+44 20 7946 0000"])},
    ),
    max_size=4,
)


@hsettings(max_examples=examples(6, 3))
@given(edits=EDITS, json_body=st.booleans())
def test_whatever_happens_during_the_delay_the_body_is_the_contact_at_the_render(
    stack: Stack, edits: list[dict[str, Any]], json_body: bool
) -> None:
    content_type = "json" if json_body else "form"
    list_id, _ = stack.automation(
        {"url": f"{stack.hook_base}/prop", "delay_s": 600, "content_type": content_type}
    )
    email = f"p{time.monotonic_ns()}@example.com"
    contact_id, (tid,) = stack.contact(list_id, email, CITY="start")
    expected = {"City": "start", "phone": ""}
    for edit in edits:
        stack.clock.advance(60)
        stack.edit(contact_id, **edit)
        expected["City"] = edit["fields"]["CITY"].strip()
        expected["phone"] = edit.get("phone", expected["phone"])
    stack.clock.advance(600)
    (got,) = stack.hook.wait(tid)
    sent = SyncPayload.from_json(got.body) if json_body else SyncPayload.from_form(got.body)
    assert sent.transactionid == int(tid)
    assert {f.name: f.value for f in sent.fields or []} == {"City": expected["City"]}
    assert sent.contact.phone == expected["phone"]
    settings = SyncActionSettings(url=f"{stack.hook_base}/prop", content_type=content_type)
    with stack.api.engine.connect() as conn:  # the state it was rendered from is the state now
        options = payload_options(settings, stack.rt)
        again = build(conn, [contact_id], options=options, transactionids={contact_id: int(tid)})[contact_id]
    assert got.body == (again.to_json() if json_body else again.to_form()).encode()


def test_the_claim_never_takes_a_delivery_still_to_render(db_url: str) -> None:
    now = datetime(2026, 5, 1, 12, 0, 0)
    engine = migrated(db_url, now=now)
    try:
        waiting = replace(outbox_request(7, "http://127.0.0.1:9/hook"), render_at_send=True)
        with engine.begin() as conn:
            enqueue(conn, [waiting], now=now)
        for lane in (None, *Lane):
            with engine.begin() as conn:
                got = claim(conn, owner="t", now=now.replace(year=2027), lease_s=60, limit=10, lane=lane)
            assert got == []
        with engine.begin() as conn:  # the same row, once rendered, is claimed at once
            conn.execute(deliveries.update().values(render_pending=None))
            (taken,) = claim(conn, owner="t", now=now, lease_s=60, limit=10)
        assert taken.transactionid == 7
    finally:
        engine.dispose()
