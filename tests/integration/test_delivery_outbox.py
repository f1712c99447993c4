"""Outbox operations on the real tables, on SQLite and PostgreSQL: claim, lease, finish, replay, health."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from contactsync.db import platform as t
from contactsync.delivery import backlog, interventions, leases, outbox
from contactsync.delivery import endpoints as ep
from contactsync.delivery.attempt import AttemptResult
from contactsync.delivery.leases import Claimed, Lane
from contactsync.delivery.outbox import Finished
from contactsync.delivery.retry import Decision, Outcome, Verdict
from support.delivery import OLD_SECRET, SECRET, enqueue_many, migrated, request, seed_action

NOW = datetime(2026, 3, 1, 12, 0, 0)
URL = "http://127.0.0.1:9/hook"
ENDPOINT = "http://127.0.0.1:9"
KEY = ep.EndpointKey(1, ENDPOINT)


def claim(engine: sa.Engine, now: datetime = NOW, **kw: object) -> list[Claimed]:
    args: dict[str, object] = {"owner": "w1", "now": now, "lease_s": 60.0, "limit": 100, **kw}
    with engine.begin() as conn:
        return leases.claim(conn, **args)  # type: ignore[arg-type]


def finished(
    c: Claimed, status: int | None, verdict: Verdict, *, after_s: float = 5.0, **kw: object
) -> Finished:
    decision = Decision(
        verdict,
        f"HTTP {status}",
        next_attempt_at=NOW + timedelta(seconds=after_s) if verdict is Verdict.RETRY else None,
        **kw,  # type: ignore[arg-type]
    )
    result = AttemptResult(Outcome(status=status, error=None if status else "connect"), 0.01, b"ok")
    return Finished(c, result, decision, NOW)


def finish(engine: sa.Engine, done: list[Finished], now: datetime = NOW) -> list[Finished]:
    with engine.begin() as conn:
        return outbox.finish(conn, done, now=now)


def states(engine: sa.Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(t.deliveries.c.transactionid, t.deliveries.c.state)).all())


def test_claim_leases_due_rows_once(engine: sa.Engine) -> None:
    enqueue_many(engine, [request(i, URL) for i in range(1, 6)], now=NOW)
    first = claim(engine, limit=3)
    assert [c.transactionid for c in first] == [1, 2, 3]
    assert all(c.attempt == 1 for c in first)
    assert first[0].body == b"transactionid=1&n=1"
    assert first[0].headers == {"X-Api-Key": "k"}
    assert first[0].endpoint == ENDPOINT
    assert [c.transactionid for c in claim(engine)] == [4, 5]
    assert claim(engine) == []
    assert set(states(engine).values()) == {"in_flight"}


def test_not_before_and_lanes(engine: sa.Engine) -> None:
    enqueue_many(engine, [request(1, URL), request(2, URL)], now=NOW)
    [one] = claim(engine, limit=1)
    finish(engine, [finished(one, 500, Verdict.RETRY, after_s=5)])
    assert claim(engine, lane=Lane.RETRY) == []  # not due yet
    assert [c.transactionid for c in claim(engine, lane=Lane.FIRST)] == [2]
    later = NOW + timedelta(seconds=6)
    assert claim(engine, later, lane=Lane.FIRST) == []
    [again] = claim(engine, later, lane=Lane.RETRY)
    assert (again.transactionid, again.attempt) == (1, 2)
    assert again.body == one.body
    assert again.url == one.url


def test_finish_records_attempts_and_moves_states(engine: sa.Engine) -> None:
    enqueue_many(engine, [request(i, URL) for i in (1, 2, 3)], now=NOW)
    c1, c2, c3 = claim(engine)
    kept = finish(
        engine,
        [
            finished(c1, 200, Verdict.DELIVERED),
            finished(c2, 500, Verdict.RETRY),
            finished(c3, 400, Verdict.FAILED),
        ],
    )
    assert len(kept) == 3
    assert states(engine) == {1: "delivered", 2: "pending", 3: "failed"}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                t.delivery_attempts.c.number, t.delivery_attempts.c.status_code, t.delivery_attempts.c.outcome
            ).order_by(t.delivery_attempts.c.delivery_id)
        ).all()
        d = conn.execute(sa.select(t.deliveries).where(t.deliveries.c.transactionid == 2)).one()
    assert [tuple(r) for r in rows] == [(1, 200, "success"), (1, 500, "http_5xx"), (1, 400, "http_4xx")]
    assert (d.attempt_count, d.lease_owner, d.last_status) == (1, None, 500)
    assert d.next_attempt_at == NOW + timedelta(seconds=5)


def test_expired_lease_is_taken_over_and_the_stale_owner_cannot_finish(engine: sa.Engine) -> None:
    enqueue_many(engine, [request(1, URL)], now=NOW)
    [mine] = claim(engine, owner="dead")
    assert claim(engine, NOW + timedelta(seconds=59), owner="w2") == []
    [theirs] = claim(engine, NOW + timedelta(seconds=61), owner="w2")
    assert theirs.attempt == 1
    assert theirs.lease != mine.lease
    assert finish(engine, [finished(mine, 200, Verdict.DELIVERED)]) == []
    assert states(engine) == {1: "in_flight"}
    assert len(finish(engine, [finished(theirs, 200, Verdict.DELIVERED)])) == 1
    assert states(engine) == {1: "delivered"}


def test_expired_leases_fill_a_claim_before_due_rows(engine: sa.Engine) -> None:
    enqueue_many(engine, [request(i, URL) for i in range(1, 5)], now=NOW)
    claim(engine, owner="dead", limit=2)
    taken = claim(engine, NOW + timedelta(seconds=61), owner="w2", limit=2)
    assert [(c.transactionid, c.lease.startswith("w2/")) for c in taken] == [(1, True), (2, True)]
    assert [c.transactionid for c in claim(engine, NOW + timedelta(seconds=61), owner="w2")] == [3, 4]


def test_extend_and_release(engine: sa.Engine) -> None:
    enqueue_many(engine, [request(1, URL), request(2, URL)], now=NOW)
    held = claim(engine)
    with engine.begin() as conn:
        assert leases.extend_leases(conn, [held[0].lease], now=NOW + timedelta(seconds=50), lease_s=60) == 2
    assert claim(engine, NOW + timedelta(seconds=61), owner="w2") == []
    with engine.begin() as conn:
        assert leases.release(conn, held, now=NOW) == 2
    again = claim(engine, owner="w2")
    assert [c.attempt for c in again] == [1, 1]


def test_disabled_endpoint_waits_and_resumes(engine: sa.Engine) -> None:
    other = "http://127.0.0.2:9/x"
    enqueue_many(engine, [request(1, URL), request(2, other)], now=NOW)
    with engine.begin() as conn:
        assert ep.disable(conn, KEY, reason="owner asked", now=NOW)
        assert not ep.disable(conn, KEY, reason="again", now=NOW)
    assert [c.transactionid for c in claim(engine)] == [2]
    with engine.begin() as conn:
        assert ep.enable(conn, KEY, now=NOW)
        assert ep.disabled(conn) == []
        kinds = list(
            conn.execute(sa.select(t.endpoint_events.c.kind).order_by(t.endpoint_events.c.id)).scalars()
        )
    assert kinds == ["disabled", "enabled"]
    assert [c.transactionid for c in claim(engine)] == [1]


def test_410_disables_the_endpoint(engine: sa.Engine) -> None:
    enqueue_many(engine, [request(1, URL), request(2, URL)], now=NOW)
    [c1] = claim(engine, limit=1)
    finish(engine, [finished(c1, 410, Verdict.RETRY, disable_endpoint=True)])
    with engine.connect() as conn:
        assert ep.disabled(conn) == [KEY]
        row = conn.execute(sa.select(t.endpoints).where(t.endpoints.c.endpoint == ENDPOINT)).one()
    assert row.failing_since == NOW
    assert row.disabled_reason.startswith("410 Gone")
    assert claim(engine, NOW + timedelta(hours=1)) == []


def test_health_bookkeeping(engine: sa.Engine) -> None:
    enqueue_many(engine, [request(i, URL) for i in (1, 2, 3)], now=NOW)
    c1, c2, c3 = claim(engine)
    finish(engine, [finished(c1, 500, Verdict.RETRY)])
    finish(engine, [finished(c2, 500, Verdict.RETRY)], now=NOW + timedelta(minutes=1))
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.endpoints)).one()
    assert (row.failing_since, row.last_failure_at) == (NOW, NOW + timedelta(minutes=1))
    finish(engine, [finished(c3, 204, Verdict.DELIVERED)], now=NOW + timedelta(minutes=2))
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.endpoints)).one()
    assert (row.failing_since, row.last_success_at) == (None, NOW + timedelta(minutes=2))


def test_ordered_per_contact(engine: sa.Engine) -> None:
    enqueue_many(
        engine,
        [
            request(1, URL, ordering_key="7:1"),
            request(2, URL, ordering_key="7:1"),
            request(3, URL, ordering_key="7:2"),
        ],
        now=NOW,
    )
    got = claim(engine)
    assert [c.transactionid for c in got] == [1, 3]
    finish(engine, [finished(got[0], 500, Verdict.RETRY, after_s=5)])
    assert claim(engine, NOW + timedelta(seconds=1)) == []  # 2 waits while 1 is pending retry
    [retry] = claim(engine, NOW + timedelta(seconds=6))
    assert retry.transactionid == 1
    finish(engine, [finished(retry, 200, Verdict.DELIVERED)])
    assert [c.transactionid for c in claim(engine, NOW + timedelta(seconds=6))] == [2]


@pytest.mark.postgres
def test_recording_a_finished_ordered_delivery_notifies_the_dispatchers(pg_url: str) -> None:
    import psycopg

    engine = migrated(pg_url, now=NOW)
    listener = psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    try:
        ordered = [request(i, URL, ordering_key="7:1") for i in (1, 2, 3)]
        enqueue_many(engine, [*ordered, request(4, URL), request(5, URL)], now=NOW)
        got = {c.transactionid: c for c in claim(engine)}
        assert sorted(got) == [1, 4, 5]
        listener.execute(f"LISTEN {outbox.NOTIFY_CHANNEL}")
        finish(engine, [finished(got[4], 200, Verdict.DELIVERED)])  # unordered: nobody waits for it
        finish(engine, [finished(got[1], 500, Verdict.RETRY)])  # its successor still waits
        finish(engine, [finished(got[5], 500, Verdict.FAILED)])
        assert list(listener.notifies(timeout=0.5)) == []
        finish(engine, [finished(got[1], 200, Verdict.DELIVERED)], now=NOW)  # the retry's lease is gone
        [retry] = claim(engine, NOW + timedelta(seconds=6))
        finish(engine, [finished(retry, 200, Verdict.DELIVERED)], now=NOW + timedelta(seconds=6))
        [note] = list(listener.notifies(timeout=5, stop_after=1))
        assert note.channel == outbox.NOTIFY_CHANNEL
        assert [c.transactionid for c in claim(engine, NOW + timedelta(seconds=6))] == [2]
    finally:
        listener.close()
        engine.dispose()


def test_cancel_replay_and_recover_since(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        action_id = seed_action(conn, now=NOW)
    enqueue_many(engine, [request(i, URL, action_id=action_id) for i in (1, 2, 3)], now=NOW)
    with engine.begin() as conn:
        outbox.enqueue(conn, [request(4, URL, action_id=action_id)], now=NOW + timedelta(hours=1))
    got = claim(engine, NOW + timedelta(hours=1))
    finish(engine, [finished(c, 500, Verdict.FAILED) for c in got])
    assert set(states(engine).values()) == {"failed"}
    ids = {c.transactionid: c.id for c in got}
    with engine.begin() as conn:
        assert interventions.cancel(conn, [ids[1]], now=NOW) == 1
        assert (
            interventions.recover_since(conn, action_id=action_id, since=NOW + timedelta(minutes=30), now=NOW)
            == 1
        )
    assert states(engine) == {1: "cancelled", 2: "failed", 3: "failed", 4: "pending"}
    with engine.begin() as conn:
        assert interventions.recover_since(conn, action_id=action_id, since=NOW, now=NOW) == 2
        assert interventions.replay(conn, [ids[1]], now=NOW) == 1
        assert interventions.cancel(conn, [ids[4]], now=NOW) == 1
    again = claim(engine, NOW + timedelta(hours=2))
    assert sorted((c.transactionid, c.attempt) for c in again) == [(1, 1), (2, 1), (3, 1)]
    finish(engine, [finished(c, 200, Verdict.DELIVERED) for c in again], now=NOW + timedelta(hours=2))
    with engine.connect() as conn:
        numbers = conn.execute(
            sa.select(t.delivery_attempts.c.number).where(t.delivery_attempts.c.delivery_id == ids[2])
        ).scalars()
        assert sorted(numbers) == [1, 2]
    with engine.connect() as conn:
        assert backlog.counts_by_state(conn) == {
            "pending": 0, "in_flight": 0, "delivered": 3, "failed": 0, "cancelled": 1,
        }  # fmt: skip


def test_action_secrets_and_settings_come_with_the_claim(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        rotating = seed_action(
            conn,
            now=NOW,
            previous_secret=OLD_SECRET,
            previous_secret_expires_at=NOW + timedelta(hours=24),
            settings={"retry_schedule_s": [0, 1, 2], "timeout_s": 3, "connect_timeout_s": 1},
        )
        expired = seed_action(
            conn, now=NOW, previous_secret=OLD_SECRET, previous_secret_expires_at=NOW - timedelta(seconds=1)
        )
    enqueue_many(engine, [request(1, URL, action_id=rotating), request(2, URL, action_id=expired)], now=NOW)
    a, b = claim(engine)
    assert a.secrets == (SECRET, OLD_SECRET)
    assert (a.schedule_s, a.total_timeout_s, a.connect_timeout_s) == ((0.0, 1.0, 2.0), 3.0, 1.0)
    assert b.secrets == (SECRET,)
    assert b.total_timeout_s == 15.0
    assert len(b.schedule_s) == 8


def test_postgres_claimers_skip_each_others_locks(pg_url: str) -> None:
    engine = migrated(pg_url, now=NOW)
    try:
        enqueue_many(engine, [request(i, URL) for i in range(1, 11)], now=NOW)
        holding = threading.Event()
        release = threading.Event()
        first: list[Claimed] = []

        def slow_claimer() -> None:
            with engine.begin() as conn:
                first.extend(leases.claim(conn, owner="a", now=NOW, lease_s=60, limit=4))
                holding.set()
                release.wait(30)

        thread = threading.Thread(target=slow_claimer)
        thread.start()
        assert holding.wait(30)
        second = claim(engine, owner="b", limit=100)  # does not wait for the uncommitted claim
        release.set()
        thread.join()
        assert [c.transactionid for c in first] == [1, 2, 3, 4]
        assert [c.transactionid for c in second] == [5, 6, 7, 8, 9, 10]
    finally:
        engine.dispose()
