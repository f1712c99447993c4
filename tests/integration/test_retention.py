"""Retention over 60 simulated days: every table stays bounded by its horizon, and nothing that may
still matter is deleted (pending, in-flight and young failed deliveries, running manual runs, inbox
entries whose handlers have not finished). The clock is injected; the storage paths are the real ones
(the outbox's enqueue/claim/finish, the audit log, a real listener served over HTTP)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from contactsync.db import create_engine
from contactsync.db import listener as ldb
from contactsync.db import platform as t
from contactsync.db.retention import Retention, prune
from contactsync.delivery import endpoints as ep
from contactsync.delivery import interventions, leases, outbox
from contactsync.delivery.attempt import AttemptResult
from contactsync.delivery.outbox import Finished
from contactsync.delivery.retry import Decision, Outcome, Verdict
from contactsync.listener.app import create_app
from contactsync.settings import Settings
from contactsync.tenancy.audit import Actor, record
from support.delivery import DEFAULT_ACCOUNT, enqueue_many, request
from support.listener import FORM, SECRET, TOKEN, serve, signed, wait_for

START = datetime(2026, 1, 1, 9, 0, 0)
DAYS = 60
POLICY = Retention(
    delivered_days=7,
    failed_days=14,
    endpoint_events_days=10,
    entries_days=10,
    runs_days=10,
    audit_days=10,
    activities_days=20,
    inbox_days=5,
)
URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def migrated_at() -> datetime:
    return START


def _ids(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        action = conn.execute(sa.select(t.actions.c.id, t.actions.c.automation_id)).first()
        assert action is not None
        list_id = conn.execute(
            sa.select(t.automations.c.list_id).where(t.automations.c.id == action.automation_id)
        ).scalar_one()
    return {"action": action.id, "automation": action.automation_id, "list": list_id}


def _day(conn: sa.Connection, now: datetime, day: int, ids: dict[str, int]) -> None:
    """A day's history besides deliveries: a contact with activity, an entry, a run, an audit row and
    an endpoint switched off and on."""
    contact = conn.execute(
        t.contacts.insert()
        .values(
            list_id=ids["list"],
            email=f"c{day}@example.com",
            email_key=f"c{day}@example.com",
            status="active",
            created_at=now,
            updated_at=now,
        )
        .returning(t.contacts.c.id)
    ).scalar_one()
    conn.execute(
        t.activities.insert(),
        [
            {"contact_id": contact, "kind": "page_visit", "url": f"/p{i}", "occurred_at": now}
            for i in range(3)
        ],
    )
    conn.execute(
        t.automation_entries.insert().values(
            account_id=DEFAULT_ACCOUNT, automation_id=ids["automation"], contact_id=contact, entered_at=now
        )
    )
    state = "running" if day == 0 else "completed"  # the first run never finishes: it must be kept
    conn.execute(
        t.manual_runs.insert().values(
            account_id=DEFAULT_ACCOUNT,
            automation_id=ids["automation"],
            state=state,
            started_at=now,
            updated_at=now,
        )
    )
    record(conn, Actor.cli(), "list.create", account_id=DEFAULT_ACCOUNT, target_type="list", now=now)
    key = ep.EndpointKey(DEFAULT_ACCOUNT, "http://127.0.0.1:9")
    ep.disable(conn, key, reason="maintenance", now=now, kind="disabled")
    ep.enable(conn, key, now=now)


def _deliveries(engine: sa.Engine, now: datetime, day: int) -> None:
    """Six deliveries a day: four delivered, one failed for good, one cancelled; and on day 0 one that
    stays pending for ever (its endpoint never answers) — retention must never take it."""
    base = (day + 1) * 100
    enqueue_many(engine, [request(base + i, URL) for i in range(6)], now=now)
    with engine.begin() as conn:
        claimed = leases.claim(conn, owner="w", now=now, lease_s=60, limit=100)
        done = []
        for c in claimed:
            if c.transactionid in (1, base + 5):
                continue
            ok = c.transactionid < base + 4
            verdict = Verdict.DELIVERED if ok else Verdict.FAILED
            decision = Decision(verdict, "HTTP 200" if ok else "HTTP 400")
            result = AttemptResult(Outcome(status=200 if ok else 400, error=None), 0.01, b"")
            done.append(Finished(c, result, decision, now))
        outbox.finish(conn, done, now=now)
        leases.release(conn, [c for c in claimed if c.transactionid in (1, base + 5)], now=now)
        cancel = sa.select(t.deliveries.c.id).where(t.deliveries.c.transactionid == base + 5)
        interventions.cancel(conn, list(conn.execute(cancel).scalars()), now=now)


def _oldest(conn: sa.Connection, column: sa.ColumnElement[Any], *where: sa.ColumnElement[bool]) -> Any:
    return conn.execute(sa.select(sa.func.min(column)).where(*where)).scalar()


def test_sixty_days_of_platform_history_stay_bounded(engine: sa.Engine) -> None:
    ids = _ids(engine)
    enqueue_many(engine, [request(1, "http://127.0.0.1:1/never")], now=START)  # pending for ever
    peaks: dict[str, int] = {}
    for day in range(DAYS):
        now = START + timedelta(days=day)
        _deliveries(engine, now, day)
        with engine.begin() as conn:
            _day(conn, now, day, ids)
        prune(engine, POLICY, side="platform", now=now, batch=7, pause_s=0)
        with engine.connect() as conn:
            for table in (
                t.deliveries,
                t.delivery_attempts,
                t.activities,
                t.automation_entries,
                t.manual_runs,
                t.audit_log,
                t.endpoint_events,
            ):
                n = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                peaks[table.name] = max(peaks.get(table.name, 0), n)
    now = START + timedelta(days=DAYS - 1)
    d = t.deliveries.c
    with engine.connect() as conn:
        # nothing older than its horizon is left, except what must be kept
        for state, days in (("delivered", 7), ("cancelled", 7), ("failed", 14)):
            oldest = _oldest(conn, d.updated_at, d.state == state)
            assert oldest >= now - timedelta(days=days), state
        assert conn.execute(sa.select(d.state).where(d.transactionid == 1)).scalar_one() == "pending"
        for column, days in (
            (t.activities.c.occurred_at, 20),
            (t.automation_entries.c.entered_at, 10),
            (t.audit_log.c.at, 10),
            (t.endpoint_events.c.created_at, 10),
        ):
            assert _oldest(conn, column) >= now - timedelta(days=days), column
        runs = t.manual_runs.c
        assert _oldest(conn, runs.started_at, runs.state == "completed") >= now - timedelta(days=10)
        assert conn.execute(sa.select(sa.func.count()).where(runs.state == "running")).scalar_one() == 1
        # attempts went with their deliveries
        orphans = (
            sa.select(sa.func.count())
            .select_from(t.delivery_attempts)
            .where(~sa.exists().where(d.id == t.delivery_attempts.c.delivery_id))
        )
        assert conn.execute(orphans).scalar_one() == 0
    # bounded: a table holds at most (horizon + 1) days of its daily rows, whatever the run's length
    per_day = {
        "activities": 3,
        "automation_entries": 1,
        "audit_log": 1,
        "endpoint_events": 2,
        "manual_runs": 1,
    }
    horizon = {
        "activities": 20,
        "automation_entries": 10,
        "audit_log": 10,
        "endpoint_events": 10,
        "manual_runs": 10,
    }
    for name, rows in per_day.items():
        assert peaks[name] <= rows * (horizon[name] + 1) + 1, (name, peaks[name])
    # 4 delivered + 1 cancelled a day for 8 days, 1 failed a day for 15 days, and the pending one
    assert peaks["deliveries"] <= 5 * 8 + 15 + 1, peaks


def test_dry_run_counts_without_deleting(engine: sa.Engine) -> None:
    ids = _ids(engine)
    for day in range(12):
        now = START + timedelta(days=day)
        _deliveries(engine, now, day)
        with engine.begin() as conn:
            _day(conn, now, day, ids)
    now = START + timedelta(days=11)
    with engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(t.deliveries)).scalar_one()
    counted = prune(engine, POLICY, side="platform", now=now, dry_run=True, batch=3, pause_s=0)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.deliveries)).scalar_one() == before
    deleted = prune(engine, POLICY, side="platform", now=now, batch=3, pause_s=0)
    assert counted.rows == deleted.rows
    assert deleted.rows["deliveries.delivered"] == 4 * 4  # days 0-3 are more than 7 days old on day 11
    assert deleted.rows["audit"] == 1  # day 0 only


def test_listener_inbox_keeps_what_its_handlers_still_need(db_url: str) -> None:
    """Syncs over HTTP for 20 simulated days; a handler that always fails keeps its entries, the
    projection's finished entries go after 5 days."""
    url = db_url
    clock = {"s": START.timestamp()}
    settings = Settings(listener_database_url=url, listener_token=TOKEN, listener_secret=SECRET)
    app = create_app(settings, clock_s=lambda: clock["s"], poll_interval_s=0.05)
    engine = create_engine(url)
    with serve(app) as base, httpx.Client(timeout=30) as http:
        for day in range(20):
            clock["s"] = (START + timedelta(days=day)).timestamp()
            for i in range(3):
                tid = day * 10 + i + 1
                body = f"transactionid={tid}&contact[id]={tid}&contact[email]=c{tid}%40example.com"
                headers = signed(body, msg_id=str(tid), timestamp=int(clock["s"]))
                answer = http.post(
                    f"{base}/sync/{TOKEN}", content=body, headers={"content-type": FORM, **headers}
                )
                assert answer.status_code == 200, answer.text
            wait_for(lambda: _all_done(engine))
            if day == 0:  # one entry whose handler has not finished: it must survive
                with engine.begin() as conn:
                    conn.execute(
                        ldb.handler_runs.update()
                        .where(ldb.handler_runs.c.inbox_id == 1)
                        .values(state="failed")
                    )
            prune(engine, POLICY, side="listener", now=START + timedelta(days=day), pause_s=0)
            with engine.connect() as conn:
                kept = conn.execute(sa.select(sa.func.count()).select_from(ldb.inbox)).scalar_one()
            assert kept <= 3 * 6 + 1, (day, kept)
    with engine.connect() as conn:
        assert conn.execute(sa.select(ldb.inbox.c.id).where(ldb.inbox.c.id == 1)).first() is not None
        oldest = conn.execute(
            sa.select(sa.func.min(ldb.inbox.c.received_at_ms)).where(ldb.inbox.c.id > 1)
        ).scalar()
        assert oldest is not None
        assert oldest >= (START + timedelta(days=19 - 5)).timestamp() * 1000
        runs = sa.select(sa.func.count()).select_from(ldb.handler_runs)
        assert (
            conn.execute(runs).scalar_one()
            == conn.execute(sa.select(sa.func.count()).select_from(ldb.inbox)).scalar_one()
        )
    engine.dispose()


def _all_done(engine: sa.Engine) -> bool:
    r = ldb.handler_runs.c
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(r.state == "pending")).scalar_one() == 0
