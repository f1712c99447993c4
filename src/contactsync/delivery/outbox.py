"""The outbox: frozen requests written in the transaction of the event that caused them.

A row holds everything needed to send the request later, byte for byte (method, URL, static headers,
body, transactionid); the signature is computed per attempt, so it is not stored. Here: enqueue,
waking the dispatchers, and recording attempts (:func:`finish`). Claiming lives in
:mod:`~contactsync.delivery.leases`, the state machine in :mod:`~contactsync.delivery.states`, the
operator's cancel/replay/recover in :mod:`~contactsync.delivery.interventions` and queue depth in
:mod:`~contactsync.delivery.backlog`. Functions take a connection and never commit: the caller's
transaction is the unit of work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from contactsync.db.backend import backend_of
from contactsync.db.bulk import insert_rows
from contactsync.db.platform import deliveries, delivery_attempts
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery.attempt import AttemptResult, outcome_label
from contactsync.delivery.leases import (
    Claimed,
)
from contactsync.delivery.retry import Decision, Outcome, Verdict
from contactsync.delivery.states import (
    IN_FLIGHT,
    NO_LEASE,
    TRANSITIONS,
    move,
    naive,
)

_VERDICT_EVENT = {Verdict.DELIVERED: "deliver", Verdict.RETRY: "retry", Verdict.FAILED: "fail"}

NOTIFY_CHANNEL = "contactsync_outbox"
"""PostgreSQL channel notified when deliveries are enqueued or replayed, and when an ordered delivery
is done (its successor may go)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRequest:
    """One request to deliver, exactly as it will go on the wire (minus signature headers)."""

    transactionid: int
    account_id: int
    """The owning account: who may see, retry or cancel it, and whose endpoint health it counts in."""
    endpoint: str
    method: str
    url: str
    body: bytes = b""
    content_type: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    action_id: int | None = None
    automation_id: int | None = None
    contact_id: int | None = None
    ordering_key: str | None = None
    not_before: datetime | None = None
    render_at_send: bool = False
    """URL and body are rendered again from the contact's data when ``not_before`` comes (same
    transactionid); until then the row holds the request as at the trigger and is never claimed."""


def enqueue(conn: sa.Connection, requests: Sequence[OutboxRequest], *, now: datetime) -> None:
    """Insert pending deliveries in the caller's transaction (one COPY on PostgreSQL).

    The caller commits: the rows become visible together with the event that produced them, or
    not at all. A duplicate transactionid violates the unique key and aborts the transaction.
    """
    if not requests:
        return
    insert_rows(
        conn,
        deliveries,
        [
            {
                "transactionid": r.transactionid,
                "account_id": r.account_id,
                "action_id": r.action_id,
                "automation_id": r.automation_id,
                "contact_id": r.contact_id,
                "endpoint": r.endpoint,
                "method": r.method,
                "url": r.url,
                "headers": dict(r.headers),
                "body": r.body,
                "content_type": r.content_type,
                "state": "pending",
                "attempt_count": 0,
                "next_attempt_at": r.not_before or now,
                "created_at": now,
                "updated_at": now,
                "ordering_key": r.ordering_key,
                "render_pending": True if r.render_at_send else None,
            }
            for r in requests
        ],
    )
    notify(conn)


def notify(conn: sa.Connection) -> None:
    """Wake idle dispatchers when the caller's transaction commits (PostgreSQL ``NOTIFY``)."""
    if backend_of(conn).listen_notify:
        conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


# --- finishing attempts --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finished:
    """One attempt made under a lease, ready to be recorded."""

    claimed: Claimed
    result: AttemptResult
    decision: Decision
    started_at: datetime


UNSIGNED = "unsigned"
"""Outcome of a delivery refused before sending: no valid secret to sign it with."""


def refuse_unsigned(claimed: Claimed, *, now: datetime) -> Finished | None:
    """A delivery must never go out unsigned: without a secret (its action deleted, its secret
    unreadable) it fails at once with that reason, and nothing is sent. ``None`` when it can be signed."""
    if claimed.secrets:
        return None
    reason = (
        "not sent: its action was deleted, so there is no secret to sign it with"
        if claimed.action_id is None
        else "not sent: the action's signing secret cannot be read (wrong or missing secrets key?)"
    )
    result = AttemptResult(Outcome(error=UNSIGNED), 0.0, detail=reason)
    return Finished(claimed, result, Decision(Verdict.FAILED, reason), now)


_DELIVER = TRANSITIONS["deliver"]
_DELIVER_SET = (
    f"state = '{_DELIVER.target}', lease_owner = NULL, lease_expires_at = NULL,"
    " attempt_count = deliveries.attempt_count + 1, last_error = NULL"
)
_DELIVER_FROM = " OR ".join(f"deliveries.state = '{source}'" for source in sorted(_DELIVER.sources))
_ATTEMPT_COLUMNS = (
    "delivery_id, account_id, number, started_at, duration_ms, status_code, response_headers,"
    " response_body, error, outcome"
)
_NEXT_NUMBER = (
    "COALESCE((SELECT max(prior.number) FROM delivery_attempts AS prior WHERE prior.delivery_id = {}), 0) + 1"
)
"""Attempt rows are numbered over the delivery's whole life (replays included): max + 1, computed in
the INSERT (no separate SELECT per flush)."""

_PG_DELIVER = f"""
WITH done AS (
    SELECT * FROM unnest(
        %(ids)s::bigint[], %(leases)s::text[], %(statuses)s::integer[], %(started)s::timestamp[],
        %(durations)s::float8[], %(headers)s::text[], %(bodies)s::bytea[], %(errors)s::text[],
        %(outcomes)s::text[]
    ) AS f(id, lease, status, started_at, duration_ms, headers, body, error, outcome)
), moved AS (
    UPDATE deliveries SET {_DELIVER_SET}, last_status = done.status,
        delivered_at = %(now)s::timestamp, updated_at = %(now)s::timestamp
    FROM done
    WHERE deliveries.id = done.id AND deliveries.lease_owner = done.lease AND ({_DELIVER_FROM})
    RETURNING deliveries.id, deliveries.account_id, done.started_at, done.duration_ms, done.status,
        done.headers, done.body, done.error, done.outcome
)
INSERT INTO delivery_attempts ({_ATTEMPT_COLUMNS})
SELECT moved.id, moved.account_id, {_NEXT_NUMBER.format("moved.id")}, moved.started_at, moved.duration_ms,
    moved.status, moved.headers::json, moved.body, moved.error, moved.outcome
FROM moved
RETURNING delivery_id
"""
"""PostgreSQL records a batch of successes in ONE statement: the fenced state change and the attempt
rows, from arrays (the same text for every batch size, so the server prepares it once)."""

_SQLITE_DELIVER = f"""
UPDATE deliveries SET {_DELIVER_SET}, last_status = ?, delivered_at = ?, updated_at = ?
WHERE deliveries.id IN (SELECT json_extract(value, '$[0]') FROM json_each(?))
    AND (deliveries.id, deliveries.lease_owner) IN (
        SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))
    AND ({_DELIVER_FROM})
RETURNING id
"""
_SQLITE_INSERT_ATTEMPT = (
    f"INSERT INTO delivery_attempts ({_ATTEMPT_COLUMNS})"
    f" VALUES (?, ?, {_NEXT_NUMBER.format('?')}, ?, ?, ?, ?, ?, ?, ?)"
)
"""SQLite runs in the process: one fenced UPDATE … RETURNING per status code (the (id, lease) pairs
travel as one JSON parameter), then the attempt rows as one executemany of plain tuples."""


def _sqlite_time(when: datetime) -> str:
    """A naive UTC datetime as SQLAlchemy stores it in SQLite (so string comparisons still order)."""
    return when.isoformat(" ", "microseconds")


def _deliver_pg(conn: sa.Connection, group: Sequence[Finished], now: datetime) -> set[int]:
    params = {
        "ids": [f.claimed.id for f in group],
        "leases": [f.claimed.lease for f in group],
        "statuses": [f.result.status for f in group],
        "started": [naive(f.started_at) for f in group],
        "durations": [f.result.duration_s * 1000.0 for f in group],
        "headers": [json.dumps(dict(f.result.headers)) for f in group],
        "bodies": [f.result.body for f in group],
        "errors": [f.result.detail or f.result.error for f in group],
        "outcomes": [outcome_label(f.result) for f in group],
        "now": now,
    }
    return {row[0] for row in conn.exec_driver_sql(_PG_DELIVER, params)}


def _deliver_sqlite(conn: sa.Connection, group: Sequence[Finished], now: datetime) -> set[int]:
    stamp = _sqlite_time(now)
    moved: set[int] = set()
    by_status: dict[int | None, list[Finished]] = {}
    for f in group:
        by_status.setdefault(f.result.status, []).append(f)
    for status, same in by_status.items():
        fence = json.dumps([(f.claimed.id, f.claimed.lease) for f in same])
        rows = conn.exec_driver_sql(_SQLITE_DELIVER, (status, stamp, stamp, fence, fence))
        moved.update(row[0] for row in rows)
    attempts = [
        (
            f.claimed.id,
            f.claimed.account_id,
            f.claimed.id,
            _sqlite_time(naive(f.started_at) or now),
            f.result.duration_s * 1000.0,
            f.result.status,
            json.dumps(dict(f.result.headers)),
            f.result.body,
            f.result.detail or f.result.error,
            outcome_label(f.result),
        )
        for f in group
        if f.claimed.id in moved
    ]
    if attempts:
        conn.exec_driver_sql(_SQLITE_INSERT_ATTEMPT, attempts)
    return moved


def finish(conn: sa.Connection, done: Sequence[Finished], *, now: datetime) -> list[Finished]:
    """Record attempts and move their deliveries on, in one transaction; returns what was recorded.

    An attempt whose lease was lost (expired and re-claimed, cancelled meanwhile) is not recorded:
    the delivery belongs to someone else now, and it will be (or was) attempted again. Successes —
    the bulk — are recorded per batch without per-row statements (one statement on PostgreSQL);
    failures row by row.
    """
    if not done:
        return []
    d = deliveries.c
    backend = backend_of(conn)
    kept: list[Finished] = []
    successes = [f for f in done if f.decision.verdict is Verdict.DELIVERED]
    if successes:
        deliver = _deliver_pg if backend.arrays else _deliver_sqlite
        moved = deliver(conn, successes, now)
        kept.extend(f for f in successes if f.claimed.id in moved)
    failures = [f for f in done if f.decision.verdict is not Verdict.DELIVERED]
    if failures:
        check = sa.select(d.id, d.lease_owner).where(
            d.id.in_([f.claimed.id for f in failures]), d.state == IN_FLIGHT
        )
        held = {(row.id, row.lease_owner) for row in conn.execute(backend.locked(check))}
        failures = [f for f in failures if (f.claimed.id, f.claimed.lease) in held]
        for verdict in (Verdict.RETRY, Verdict.FAILED):
            group = [f for f in failures if f.decision.verdict is verdict]
            if group:
                _move_failed(conn, verdict, group, now=now)
        if failures:
            conn.execute(_INSERT_ATTEMPT, [_attempt_row(f) for f in failures])
        kept.extend(failures)
    if not kept:
        return []
    _record_health(conn, kept, now=now)
    if any(unblocks_successor(f) for f in kept):
        notify(conn)  # the next delivery of an ordered key is claimable once this commits
    return kept


def unblocks_successor(f: Finished) -> bool:
    """Whether recording ``f`` lets the next delivery of its ordering key go (it left pending/in flight)."""
    return f.claimed.ordering_key is not None and f.decision.verdict is not Verdict.RETRY


def _move_failed(conn: sa.Connection, verdict: Verdict, group: Sequence[Finished], *, now: datetime) -> None:
    values: dict[str, Any] = {
        **NO_LEASE,
        "attempt_count": sa.bindparam("b_attempt"),
        "last_status": sa.bindparam("b_status"),
        "last_error": sa.bindparam("b_error"),
    }
    if verdict is Verdict.RETRY:
        values["next_attempt_at"] = sa.bindparam("b_next")
    params = [
        {
            "b_id": f.claimed.id,
            "b_attempt": f.claimed.attempt,
            "b_status": f.result.status,
            "b_error": f.decision.reason[:2000],
            "b_next": naive(f.decision.next_attempt_at),
        }
        for f in group
    ]
    move(
        conn, _VERDICT_EVENT[verdict], deliveries.c.id == sa.bindparam("b_id"), values, now=now, params=params
    )


_prior = delivery_attempts.alias("prior")
_INSERT_ATTEMPT = delivery_attempts.insert().values(
    number=sa.select(sa.func.coalesce(sa.func.max(_prior.c.number), 0) + 1)
    .where(_prior.c.delivery_id == sa.bindparam("b_delivery"))
    .scalar_subquery()
)
"""The attempt row of a failure (few: one executemany per flush)."""


def _attempt_row(f: Finished) -> dict[str, Any]:
    result = f.result
    return {
        "delivery_id": f.claimed.id,
        "account_id": f.claimed.account_id,
        "b_delivery": f.claimed.id,
        "started_at": f.started_at,
        "duration_ms": result.duration_s * 1000.0,
        "status_code": result.status,
        "response_headers": dict(result.headers),
        "response_body": result.body,
        "error": result.detail or result.error,
        "outcome": outcome_label(f.result),
    }


def _record_health(conn: sa.Connection, kept: Sequence[Finished], *, now: datetime) -> None:
    latest: dict[endpoint_rows.EndpointKey, bool] = {}
    for f in kept:
        if f.result.error != UNSIGNED:  # refused here, never sent: says nothing of the endpoint
            latest[f.claimed.endpoint_key] = f.result.outcome.succeeded
    endpoint_rows.record_outcomes(conn, latest, now=now)
    for f in kept:
        if f.decision.disable_endpoint:
            reason = f"410 Gone from {f.claimed.url}"
            endpoint_rows.disable(conn, f.claimed.endpoint_key, reason=reason, now=now, kind="gone")
