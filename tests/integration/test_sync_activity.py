"""The platform's own delivered syncs are the contact's webhook activity (automation/sync_activity.py).

Through the real API and its in-process dispatcher to a receiver on 127.0.0.1, on SQLite and
PostgreSQL: a delivered sync shows in the contact's activity and in the next sync's
webhooks-triggered section, fires ``webhook.triggered`` automations but never the one that sent it,
chains stop after one hop, failed and cancelled deliveries are not recorded, and concurrent or
crashing passes record each delivery once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from contactsync.automation.runtime import Runtime
from contactsync.automation.sync_activity import record_batch, record_pending, webhook_name
from contactsync.db import platform as t
from contactsync.db.retention import Retention, prune
from contactsync.settings import Settings
from support.api import Api, api_client
from support.listener import serve
from support.platform import installation

FAST = {
    "allowed_cidrs": ["127.0.0.0/8"],
    "poll_interval_s": 0.1,
    "sync_activity_interval_s": 0.1,
    "sync_activity_settle_s": 0.5,
}


class Hooks:
    """A receiver: ``/ok`` answers 200, ``/abort`` 400 with ``webhook-delivery: abort`` (failed at once)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def ok(self, request: Request) -> PlainTextResponse:
        self.bodies.append(json.loads(await request.body()))
        return PlainTextResponse("thanks")

    async def abort(self, request: Request) -> PlainTextResponse:
        await request.body()
        return PlainTextResponse("no", status_code=400, headers={"webhook-delivery": "abort"})

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/ok", self.ok, methods=["POST"]), Route("/abort", self.abort, methods=["POST"])]
        )


@contextmanager
def platform(db_url: str, **extra: Any) -> Iterator[tuple[Api, Hooks, str]]:
    hooks = Hooks()
    with serve(hooks.app) as base, api_client(db_url, run_dispatcher=True, **{**FAST, **extra}) as api:
        yield api, hooks, base


def until(what: Callable[[], Any], *, timeout_s: float = 60.0) -> Any:
    """Poll ``what`` until it is truthy (progress, not timing: the deadline only ends a hung test)."""
    deadline = time.monotonic() + timeout_s
    while not (got := what()):
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)
    return got


def automation(api: Api, list_id: int, name: str, trigger: dict[str, Any], **extra: Any) -> int:
    body = {"list_id": list_id, "name": name, "trigger": trigger, **extra}
    return int(api.ok("POST", "/api/automations", 201, json=body)["id"])


def action(api: Api, automation_id: int, url: str, **extra: Any) -> int:
    body = {"url": url, "content_type": "json", **extra}
    return int(api.ok("POST", f"/api/automations/{automation_id}/actions", 201, json=body)["id"])


def webhooks(api: Api, contact_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.ok("GET", f"/api/contacts/{contact_id}/activity?kind=webhook")["items"]
    return items


def deliveries_of(api: Api, automation_id: int) -> list[sa.Row[Any, Any, Any]]:
    with api.engine.connect() as conn:
        d = t.deliveries.c
        query = sa.select(d.id, d.state, d.cause_activity_id).where(d.automation_id == automation_id)
        return list(conn.execute(query.order_by(d.id)).all())


def test_a_delivered_sync_is_activity_and_triggers_the_next_automation(db_url: str) -> None:
    with platform(db_url) as (api, hooks, base):
        lst = api.ok("POST", "/api/lists", 201, json={"name": "L"})["id"]
        welcome = automation(api, lst, "Welcome series", {"event": "contact.created"})
        sent = action(api, welcome, f"{base}/ok")
        follow = automation(api, lst, "Follow-up", {"event": "webhook.triggered", "ref_id": sent})
        action(api, follow, f"{base}/ok", sections=["webhooks-triggered"], name="To the CRM")
        contact = api.ok("POST", f"/api/lists/{lst}/contacts", 201, json={"email": "ann@example.com"})
        cid = contact["contact"]["id"]
        # the welcome sync is delivered, recorded, and fires the follow-up, whose sync carries it
        first = until(lambda: [d for d in deliveries_of(api, welcome) if d.state == "delivered"])[0]
        second = until(lambda: [d for d in deliveries_of(api, follow) if d.state == "delivered"])[0]
        name = f"Welcome series · action {sent}"
        assert webhook_name("Welcome series", sent) == name
        recorded = until(lambda: len(webhooks(api, cid)) == 2 and webhooks(api, cid))
        by_delivery = {w["delivery_id"]: w for w in recorded}
        assert by_delivery[first.id]["ref_id"] == sent
        assert by_delivery[first.id]["name"] == name
        assert by_delivery[second.id]["name"] == "Follow-up · To the CRM"  # a named action by its name
        assert second.cause_activity_id == by_delivery[first.id]["id"]  # the loop guard's mark
        assert first.cause_activity_id is None
        follow_body = next(b for b in hooks.bodies if b.get("webhooks-triggered"))
        assert follow_body["webhooks-triggered"][0]["id"] == sent
        assert follow_body["webhooks-triggered"][0]["name"] == name
        # the follow-up's own sync is activity too, but it triggered nothing (once, and one hop)
        assert len(deliveries_of(api, follow)) == 1
        assert len(deliveries_of(api, welcome)) == 1
        explained = api.ok("GET", f"/api/automations/{follow}/explain?contact_id={cid}")
        assert explained["deliveries"][0]["cause_activity_id"] == by_delivery[first.id]["id"]
        assert "never its own" in explained["trigger"]
        # a condition over webhook activity counts the platform's syncs
        counts = {
            "op": "and",
            "conditions": [{"type": "activity", "kind": "webhook", "ref_id": sent, "min_count": 1}],
        }
        checker = automation(api, lst, "Checker", {"event": "manual"}, conditions=counts)
        assert api.ok("GET", f"/api/automations/{checker}/explain?contact_id={cid}")["matches"] is True


def test_a_sync_never_triggers_its_own_automation(db_url: str) -> None:
    with platform(db_url) as (api, _hooks, base):
        lst = api.ok("POST", "/api/lists", 201, json={"name": "L"})["id"]
        echo = automation(api, lst, "Echo", {"event": "webhook.triggered"}, reentry={"policy": "always"})
        action(api, echo, f"{base}/ok")
        cid = api.ok("POST", f"/api/lists/{lst}/contacts", 201, json={"email": "bo@example.com"})["contact"][
            "id"
        ]
        event = {"kind": "webhook.triggered", "contact_id": cid, "webhook_id": 77, "webhook_name": "posted"}
        assert len(api.ok("POST", "/api/events", 202, json={"events": [event]})["transactionids"]) == 1
        # once its sync is recorded (in the transaction that would have fired), nothing more was queued
        until(lambda: any(w["delivery_id"] is not None for w in webhooks(api, cid)))
        assert len(deliveries_of(api, echo)) == 1
        posted = [w for w in webhooks(api, cid) if w["delivery_id"] is None]
        assert [(w["ref_id"], w["name"]) for w in posted] == [(77, "posted")]


def test_two_automations_ping_pong_for_one_hop_only(db_url: str) -> None:
    with platform(db_url) as (api, _hooks, base):
        lst = api.ok("POST", "/api/lists", 201, json={"name": "L"})["id"]
        again = {"reentry": {"policy": "always"}}
        ping = automation(api, lst, "Ping", {"event": "webhook.triggered"}, **again)
        pong = automation(api, lst, "Pong", {"event": "webhook.triggered"}, **again)
        action(api, ping, f"{base}/ok")
        action(api, pong, f"{base}/ok")
        cid = api.ok("POST", f"/api/lists/{lst}/contacts", 201, json={"email": "cy@example.com"})["contact"][
            "id"
        ]
        event = {"kind": "webhook.triggered", "contact_id": cid, "webhook_id": 5}
        assert len(api.ok("POST", "/api/events", 202, json={"events": [event]})["transactionids"]) == 2
        # ping's sync fires pong, pong's fires ping; those two are recorded and fire nothing
        until(lambda: sum(w["delivery_id"] is not None for w in webhooks(api, cid)) == 4)
        for mine in (ping, pong):
            rows = deliveries_of(api, mine)
            assert len(rows) == 2
            assert rows[0].cause_activity_id is None
            assert rows[1].cause_activity_id is not None
        with api.engine.connect() as conn:
            entries = conn.execute(sa.select(sa.func.count()).select_from(t.automation_entries)).scalar_one()
        assert entries == 4


def test_failed_and_cancelled_deliveries_are_not_recorded(db_url: str) -> None:
    with platform(db_url) as (api, _hooks, base):
        lst = api.ok("POST", "/api/lists", 201, json={"name": "L"})["id"]
        refused = automation(api, lst, "Refused", {"event": "contact.created"})
        action(api, refused, f"{base}/abort")
        later = automation(api, lst, "Later", {"event": "contact.created"})
        action(api, later, f"{base}/ok", delay_s=3600)
        cid = api.ok("POST", f"/api/lists/{lst}/contacts", 201, json={"email": "di@example.com"})["contact"][
            "id"
        ]
        until(lambda: [d for d in deliveries_of(api, refused) if d.state == "failed"])
        waiting = deliveries_of(api, later)[0]
        assert api.ok("POST", f"/api/deliveries/{waiting.id}/cancel")["state"] == "cancelled"
        # a delivered sync of another contact: once it is recorded, the job has passed the others
        fine = automation(api, lst, "Fine", {"event": "contact.updated"})
        action(api, fine, f"{base}/ok")
        api.ok("PATCH", f"/api/contacts/{cid}", json={"phone": "+15550001111"})
        until(lambda: webhooks(api, cid))
        assert [w["name"] for w in webhooks(api, cid)] == [webhook_name("Fine", _action_of(api, fine))]


def _action_of(api: Api, automation_id: int) -> int:
    with api.engine.connect() as conn:
        query = sa.select(t.actions.c.id).where(t.actions.c.automation_id == automation_id)
        return int(conn.execute(query).scalar_one())


# --- exactly once, however many passes run at once or crash -----------------------------------------


class Crash(Exception):
    """A pass dying after its work and before its commit."""


def _crashing_pass(engine: sa.Engine, rt: Runtime, batch: int) -> None:
    try:
        with engine.begin() as conn:
            record_batch(conn, rt, settled=rt.clock() + timedelta(days=1), batch=batch)
            raise Crash
    except Crash:
        pass  # rolled back: its activities, entries, deliveries and cursor move never happened


@pytest.fixture
def quiet(db_url: str) -> Iterator[tuple[Api, str, Runtime]]:
    """The platform with its dispatcher but no recording job of its own: the test runs the passes."""
    with platform(db_url, sync_activity_interval_s=0) as (api, _hooks, base):
        rt = Runtime.create(Settings(database_url=db_url), engine=api.engine)
        yield api, base, rt


@settings(max_examples=4)
@given(
    contacts=st.integers(min_value=1, max_value=12),
    passes=st.lists(st.tuples(st.integers(min_value=1, max_value=7), st.booleans()), min_size=2, max_size=5),
    replays=st.integers(min_value=0, max_value=3),
)
def test_concurrent_and_crashing_passes_record_each_delivery_once(
    quiet: tuple[Api, str, Runtime], contacts: int, passes: list[tuple[int, bool]], replays: int
) -> None:
    """Each delivered delivery is recorded and fires once, even delivered again by a replay."""
    api, base, rt = quiet
    with api.engine.connect() as conn:
        known = conn.execute(sa.select(t.lists.c.id).order_by(t.lists.c.id)).scalars().first()
    if known is None:
        lst = api.ok("POST", "/api/lists", 201, json={"name": "L"})["id"]
        first = automation(api, lst, "First", {"event": "contact.created"})
        sent = action(api, first, f"{base}/ok")
        again = {"reentry": {"policy": "always"}}  # a second firing would show as a second entry
        chained = automation(api, lst, "Chained", {"event": "webhook.triggered", "ref_id": sent}, **again)
        action(api, chained, f"{base}/ok")
    else:
        lst = known
    stamp = time.monotonic_ns()
    for i in range(contacts):
        api.ok("POST", f"/api/lists/{lst}/contacts", 201, json={"email": f"p{stamp}-{i}@example.com"})
    d = t.deliveries.c
    with api.engine.connect() as conn:  # closed before calling the API (SQLite: one writer)
        earlier = conn.execute(
            sa.select(d.id).where(d.state == "delivered", d.cause_activity_id.is_(None)).order_by(d.id)
        ).scalars()
        replayed = list(earlier)[:replays]
    for delivery in replayed:  # sent again: a later updated_at, the same delivery
        api.ok("POST", f"/api/deliveries/{delivery}/retry")

    def unfinished() -> int:
        with api.engine.connect() as conn:
            where = d.state.in_(["pending", "in_flight"])
            return int(conn.execute(sa.select(sa.func.count()).where(where)).scalar_one())

    until(lambda: unfinished() == 0)
    threads = [
        threading.Thread(
            target=_crashing_pass if crash else record_pending,
            args=(api.engine, rt, batch) if crash else (api.engine, rt),
            kwargs={} if crash else {"settle_s": 0.0, "batch": batch},
        )
        for batch, crash in passes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    while True:  # the chained syncs are delivered and recorded too, and then nothing more is queued
        until(lambda: unfinished() == 0)
        if not record_pending(api.engine, rt, settle_s=0.0).transactionids:
            break
    with api.engine.connect() as conn:
        a = t.activities.c
        recorded = conn.execute(sa.select(a.delivery_id).where(a.delivery_id.is_not(None))).scalars().all()
        delivered = conn.execute(
            sa.select(d.id, d.automation_id, d.cause_activity_id).where(d.state == "delivered")
        ).all()
        entries = conn.execute(sa.select(sa.func.count()).select_from(t.automation_entries)).scalar_one()
        everything = conn.execute(sa.select(sa.func.count()).select_from(t.deliveries)).scalar_one()
    assert len(recorded) == len(set(recorded))  # the unique key would refuse it anyway: never tried twice
    assert set(recorded) == {r.id for r in delivered}
    assert everything == len(delivered)
    firsts = [r for r in delivered if r.cause_activity_id is None]
    caused = [r for r in delivered if r.cause_activity_id is not None]
    # each first sync entered its contact into the chained automation once; the chained syncs fired nothing
    assert len(caused) == len(firsts)
    assert entries == 2 * len(firsts)
    assert {r.automation_id for r in firsts}.isdisjoint({r.automation_id for r in caused})


def test_two_worker_processes_record_each_delivery_once(pg_url: str, tmp_path: Path) -> None:
    """Two ``contactsync worker`` processes, each with its recording job, on one PostgreSQL database."""
    hooks = Hooks()
    fast = {"poll_interval_s": 0.1, "sync_activity_interval_s": 0.05, "sync_activity_settle_s": 0.5}
    with (
        serve(hooks.app) as base,
        installation(pg_url, tmp_path, api_processes=1, worker_processes=2, **fast) as inst,
        inst.client() as client,
    ):
        api = Api(client, inst.apis[0], inst.engine, inst.account_id, inst.key)
        lst = api.ok("POST", "/api/lists", 201, json={"name": "L"})["id"]
        first = automation(api, lst, "First", {"event": "contact.created"})
        sent = action(api, first, f"{base}/ok")
        again = {"reentry": {"policy": "always"}}
        chained = automation(api, lst, "Chained", {"event": "webhook.triggered", "ref_id": sent}, **again)
        action(api, chained, f"{base}/ok")
        contacts = 30
        for i in range(contacts):
            api.ok("POST", f"/api/lists/{lst}/contacts", 201, json={"email": f"w{i}@example.com"})
        a, d = t.activities.c, t.deliveries.c
        recorded = sa.select(sa.func.count()).where(a.delivery_id.is_not(None))
        until(lambda: inst.scalar(recorded) == 2 * contacts, timeout_s=120)
        with inst.engine.connect() as conn:
            ids = conn.execute(sa.select(a.delivery_id).where(a.delivery_id.is_not(None))).scalars().all()
            rows = conn.execute(sa.select(d.id, d.state, d.automation_id, d.cause_activity_id)).all()
        assert len(set(ids)) == len(ids) == len(rows) == 2 * contacts
        assert {r.state for r in rows} == {"delivered"}
        assert sum(r.automation_id == chained for r in rows) == contacts  # one firing per first sync
        assert all((r.cause_activity_id is not None) == (r.automation_id == chained) for r in rows)


def test_retention_prunes_recorded_syncs_and_nothing_comes_back(db_url: str) -> None:
    """Retention deletes old deliveries and activity alike (no key ties them); the job's cursor is past
    them, so nothing is recorded again and nothing fails."""
    with platform(db_url) as (api, _hooks, base):
        lst = api.ok("POST", "/api/lists", 201, json={"name": "L"})["id"]
        action(api, automation(api, lst, "Welcome", {"event": "contact.created"}), f"{base}/ok")
        cid = api.ok("POST", f"/api/lists/{lst}/contacts", 201, json={"email": "ed@example.com"})["contact"][
            "id"
        ]
        until(lambda: webhooks(api, cid))
        rt = Runtime.create(Settings(database_url=db_url), engine=api.engine)
        later = rt.clock() + timedelta(days=400)
        keep_little = Retention(delivered_days=1, activities_days=1)
        report = prune(api.engine, keep_little, side="platform", now=later, pause_s=0)
        assert report.rows["deliveries.delivered"] == 1
        assert report.rows["activities"] >= 2  # the sync's webhook row and its automation entry row
        assert webhooks(api, cid) == []
        assert record_pending(api.engine, rt, settle_s=0.0).read == 0
        assert webhooks(api, cid) == []
