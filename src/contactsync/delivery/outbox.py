"""The outbox: frozen requests written in the transaction of the event that caused them.

A row holds everything needed to send the request later, byte for byte (method, URL, static headers,
body, transactionid); the signature is computed per attempt, so it is not stored. This module is
the only writer of a delivery's state: every change goes through :data:`TRANSITIONS` —
``pending → in_flight → delivered | pending (retry) | failed | cancelled``, plus release and replay.
Functions take a connection and never commit: the caller's transaction is the unit of work.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from contactsync.db.platform import actions, deliveries, delivery_attempts, endpoints
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery.attempt import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TOTAL_TIMEOUT_S, AttemptResult
from contactsync.delivery.retry import DEFAULT_SCHEDULE_S, Decision, Verdict

SETTING_SCHEDULE = "retry_schedule_s"
SETTING_CONNECT_TIMEOUT = "connect_timeout_s"
SETTING_TOTAL_TIMEOUT = "timeout_s"
"""Keys of ``actions.settings`` the dispatcher reads (absent: delivery.md defaults)."""
NOTIFY_CHANNEL = "contactsync_outbox"
"""PostgreSQL channel notified when deliveries are enqueued or replayed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRequest:
    """One request to deliver, exactly as it will go on the wire (minus signature headers)."""

    transactionid: int
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


def enqueue(conn: sa.Connection, requests: Sequence[OutboxRequest], *, now: datetime) -> None:
    """Insert pending deliveries in the caller's transaction (one multi-row INSERT).

    The caller commits: the rows become visible together with the event that produced them, or
    not at all. A duplicate transactionid violates the unique key and aborts the transaction.
    """
    if not requests:
        return
    conn.execute(
        deliveries.insert(),
        [
            {
                "transactionid": r.transactionid,
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
            }
            for r in requests
        ],
    )
    notify(conn)


def notify(conn: sa.Connection) -> None:
    """Wake idle dispatchers when the caller's transaction commits (PostgreSQL ``NOTIFY``)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


# --- state machine -------------------------------------------------------------------------------

PENDING, IN_FLIGHT, DELIVERED, FAILED, CANCELLED = "pending", "in_flight", "delivered", "failed", "cancelled"


@dataclass(frozen=True, slots=True)
class Transition:
    sources: frozenset[str]
    target: str


TRANSITIONS: Mapping[str, Transition] = {
    # an in_flight row is claimable again only once its lease expired (the claim query checks)
    "claim": Transition(frozenset({PENDING, IN_FLIGHT}), IN_FLIGHT),
    "deliver": Transition(frozenset({IN_FLIGHT}), DELIVERED),
    "retry": Transition(frozenset({IN_FLIGHT}), PENDING),
    "fail": Transition(frozenset({IN_FLIGHT}), FAILED),
    "release": Transition(frozenset({IN_FLIGHT}), PENDING),
    "cancel": Transition(frozenset({PENDING, FAILED}), CANCELLED),
    "replay": Transition(frozenset({FAILED, CANCELLED, DELIVERED}), PENDING),
}
"""Every state change of a delivery; nothing else writes ``deliveries.state``."""

_VERDICT_EVENT = {Verdict.DELIVERED: "deliver", Verdict.RETRY: "retry", Verdict.FAILED: "fail"}
_NO_LEASE: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}


def _move(
    conn: sa.Connection,
    event: str,
    where: sa.ColumnElement[bool],
    values: Mapping[str, Any],
    *,
    now: datetime,
    params: Sequence[Mapping[str, Any]] | None = None,
    returning: bool = False,
) -> sa.CursorResult[Any]:
    """Apply transition ``event`` to the rows matching ``where`` (``rowcount``: how many moved)."""
    step = TRANSITIONS[event]
    d = deliveries.c
    stmt = (
        deliveries.update()
        .where(where, sa.or_(*(d.state == source for source in sorted(step.sources))))
        .values(state=step.target, updated_at=now, **values)
    )
    if returning:
        stmt = stmt.returning(d.id)
    return conn.execute(stmt, list(params)) if params else conn.execute(stmt)


# --- claiming ------------------------------------------------------------------------------------


class Lane(enum.StrEnum):
    """First attempts and retries are claimed separately so a retry backlog never delays new work."""

    FIRST = "first"
    RETRY = "retry"


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """A delivery leased to one dispatcher for one attempt, with what it needs to send and judge it."""

    id: int
    transactionid: int
    endpoint: str
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    content_type: str
    attempt: int
    """Number of the attempt about to be made within the current round (1-based; a replay starts a
    new round): what the retry schedule is indexed by. Attempt rows are numbered over the whole life."""
    lease: str
    created_at: datetime
    action_id: int | None = None
    secrets: tuple[str, ...] = ()
    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S


def new_lease(owner: str) -> str:
    """A lease token: owner name plus a random part, so a stale owner never finishes a re-claimed row."""
    return f"{owner[:80]}/{uuid.uuid4().hex[:16]}"


def _claimable(
    now: datetime, lane: Lane | None, skip_endpoints: Sequence[str], *, expired: bool
) -> list[sa.ColumnElement[bool]]:
    d = deliveries.c
    older = deliveries.alias("older")
    due = (
        sa.and_(d.state == IN_FLIGHT, d.lease_expires_at <= now)
        if expired
        else sa.and_(d.state == PENDING, d.next_attempt_at <= now)
    )
    conds: list[sa.ColumnElement[bool]] = [
        due,
        d.endpoint.not_in(sa.select(endpoints.c.endpoint).where(endpoints.c.disabled_at.is_not(None))),
        sa.or_(
            d.ordering_key.is_(None),
            ~sa.exists().where(
                older.c.ordering_key == d.ordering_key,
                older.c.transactionid < d.transactionid,
                older.c.state.in_([PENDING, IN_FLIGHT]),
            ),
        ),
    ]
    if lane is Lane.FIRST:
        conds.append(d.attempt_count == 0)
    elif lane is Lane.RETRY:
        conds.append(d.attempt_count > 0)
    if skip_endpoints:
        conds.append(d.endpoint.not_in(list(skip_endpoints)))
    return conds


def claim(
    conn: sa.Connection,
    *,
    owner: str,
    now: datetime,
    lease_s: float,
    limit: int,
    lane: Lane | None = None,
    skip_endpoints: Sequence[str] = (),
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries to ``owner`` for ``lease_s`` seconds (commit to publish).

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets any number of dispatchers claim side by side without
    waiting on each other. SQLite: the transaction holds the database's write lock (``BEGIN
    IMMEDIATE``), so claims are serialized — one dispatcher process is the supported set-up there.
    Expired leases (a dispatcher that died mid-attempt) are claimable like pending rows.
    """
    if limit <= 0:
        return []
    d = deliveries.c
    ids: list[int] = []
    # two index-friendly queries (state, next_attempt_at) instead of one OR: expired leases first
    for expired in (True, False):
        pick = (
            sa.select(d.id)
            .where(*_claimable(now, lane, skip_endpoints, expired=expired))
            .order_by(d.next_attempt_at, d.id)
            .limit(limit - len(ids))
        )
        if conn.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True, of=deliveries)
        ids.extend(conn.execute(pick).scalars())
        if len(ids) >= limit:
            break
    if not ids:
        return []
    lease = new_lease(owner)
    stmt = (
        deliveries.update()
        .where(d.id.in_(ids), d.state.in_(sorted(TRANSITIONS["claim"].sources)))
        .values(
            state=TRANSITIONS["claim"].target,
            lease_owner=lease,
            lease_expires_at=now + timedelta(seconds=lease_s),
            updated_at=now,
        )
        .returning(
            d.id, d.transactionid, d.endpoint, d.method, d.url, d.headers, d.body, d.content_type,
            d.attempt_count, d.created_at, d.action_id,
        )
    )  # fmt: skip
    rows = conn.execute(stmt).all()
    settings = _action_settings(conn, {r.action_id for r in rows if r.action_id is not None}, now)
    claimed = []
    for r in rows:
        secrets, schedule, connect_s, total_s = settings.get(r.action_id, _NO_ACTION)
        claimed.append(
            Claimed(
                id=r.id,
                transactionid=r.transactionid,
                endpoint=r.endpoint,
                method=r.method,
                url=r.url,
                headers=dict(r.headers or {}),
                body=bytes(r.body),
                content_type=r.content_type,
                attempt=r.attempt_count + 1,
                lease=lease,
                created_at=r.created_at,
                action_id=r.action_id,
                secrets=secrets,
                schedule_s=schedule,
                connect_timeout_s=connect_s,
                total_timeout_s=total_s,
            )
        )
    claimed.sort(key=lambda c: c.transactionid)
    return claimed


_ActionSettings = tuple[tuple[str, ...], tuple[float, ...], float, float]
_NO_ACTION: _ActionSettings = ((), DEFAULT_SCHEDULE_S, DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TOTAL_TIMEOUT_S)


def _action_settings(
    conn: sa.Connection, action_ids: set[int], now: datetime
) -> dict[int | None, _ActionSettings]:
    """Secrets valid now (two during rotation) and the per-action timeouts and schedule."""
    if not action_ids:
        return {}
    a = actions.c
    rows = conn.execute(
        sa.select(a.id, a.secret, a.previous_secret, a.previous_secret_expires_at, a.settings).where(
            a.id.in_(sorted(action_ids))
        )
    )
    found: dict[int | None, _ActionSettings] = {}
    for row in rows:
        secrets = [row.secret]
        if row.previous_secret and (
            row.previous_secret_expires_at is None or row.previous_secret_expires_at > now
        ):
            secrets.append(row.previous_secret)
        opts = row.settings if isinstance(row.settings, dict) else {}
        schedule = tuple(float(s) for s in opts.get(SETTING_SCHEDULE) or DEFAULT_SCHEDULE_S)
        found[row.id] = (
            tuple(secrets),
            schedule,
            float(opts.get(SETTING_CONNECT_TIMEOUT) or DEFAULT_CONNECT_TIMEOUT_S),
            float(opts.get(SETTING_TOTAL_TIMEOUT) or DEFAULT_TOTAL_TIMEOUT_S),
        )
    return found


def extend_leases(conn: sa.Connection, leases: Sequence[str], *, now: datetime, lease_s: float) -> int:
    """Push back the expiry of leases still held (work waiting on a rate or concurrency limit)."""
    if not leases:
        return 0
    d = deliveries.c
    stmt = (
        deliveries.update()
        .where(d.lease_owner.in_(list(leases)), d.state == IN_FLIGHT)
        .values(lease_expires_at=now + timedelta(seconds=lease_s))
    )
    return int(conn.execute(stmt).rowcount)


def release(conn: sa.Connection, claimed: Sequence[Claimed], *, now: datetime) -> int:
    """Give leased deliveries back unattempted (graceful shutdown): due again at once, attempt unused."""
    d = deliveries.c
    return sum(
        _move(conn, "release", sa.and_(d.id.in_(ids), d.lease_owner == lease), _NO_LEASE, now=now).rowcount
        for lease, ids in _by_lease(claimed).items()
    )


def _by_lease(claimed: Sequence[Claimed]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for c in claimed:
        grouped.setdefault(c.lease, []).append(c.id)
    return grouped


# --- finishing attempts --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finished:
    """One attempt made under a lease, ready to be recorded."""

    claimed: Claimed
    result: AttemptResult
    decision: Decision
    started_at: datetime


def finish(conn: sa.Connection, done: Sequence[Finished], *, now: datetime) -> list[Finished]:
    """Record attempts and move their deliveries on, in one transaction; returns what was recorded.

    An attempt whose lease was lost (expired and re-claimed, cancelled meanwhile) is not recorded:
    the delivery belongs to someone else now, and it will be (or was) attempted again. Successes —
    the bulk — move in one fenced ``UPDATE … RETURNING`` per status code; failures row by row.
    """
    if not done:
        return []
    d = deliveries.c
    kept: list[Finished] = []
    successes: dict[int | None, list[Finished]] = {}
    for f in done:
        if f.decision.verdict is Verdict.DELIVERED:
            successes.setdefault(f.result.status, []).append(f)
    for status, group in successes.items():
        values = {
            **_NO_LEASE,
            "attempt_count": d.attempt_count + 1,
            "last_status": status,
            "last_error": None,
        }
        fence = sa.tuple_(d.id, d.lease_owner).in_([(f.claimed.id, f.claimed.lease) for f in group])
        moved = set(
            _move(conn, "deliver", fence, {**values, "delivered_at": now}, now=now, returning=True).scalars()
        )
        kept.extend(f for f in group if f.claimed.id in moved)
    failures = [f for f in done if f.decision.verdict is not Verdict.DELIVERED]
    if failures:
        check = sa.select(d.id, d.lease_owner).where(
            d.id.in_([f.claimed.id for f in failures]), d.state == IN_FLIGHT
        )
        if conn.dialect.name == "postgresql":
            check = check.with_for_update()
        held = {(row.id, row.lease_owner) for row in conn.execute(check)}
        failures = [f for f in failures if (f.claimed.id, f.claimed.lease) in held]
        for verdict in (Verdict.RETRY, Verdict.FAILED):
            group = [f for f in failures if f.decision.verdict is verdict]
            if group:
                _move_failed(conn, verdict, group, now=now)
        kept.extend(failures)
    if not kept:
        return []
    a = delivery_attempts.c
    last = dict(
        conn.execute(
            sa.select(a.delivery_id, sa.func.max(a.number))
            .where(a.delivery_id.in_([f.claimed.id for f in kept]))
            .group_by(a.delivery_id)
        ).all()
    )
    # RETURNING makes SQLAlchemy batch the rows into multi-row INSERTs ("insertmanyvalues")
    rows = [_attempt_row(f, last.get(f.claimed.id, 0) + 1) for f in kept]
    conn.execute(delivery_attempts.insert().returning(a.id), rows)
    _record_health(conn, kept, now=now)
    return kept


def _move_failed(conn: sa.Connection, verdict: Verdict, group: Sequence[Finished], *, now: datetime) -> None:
    values: dict[str, Any] = {
        **_NO_LEASE,
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
            "b_next": _naive(f.decision.next_attempt_at),
        }
        for f in group
    ]
    _move(
        conn, _VERDICT_EVENT[verdict], deliveries.c.id == sa.bindparam("b_id"), values, now=now, params=params
    )


def _attempt_row(f: Finished, number: int) -> dict[str, Any]:
    result = f.result
    return {
        "delivery_id": f.claimed.id,
        "number": number,
        "started_at": f.started_at,
        "duration_ms": result.duration_s * 1000.0,
        "status_code": result.status,
        "response_headers": dict(result.headers),
        "response_body": result.body,
        "error": result.detail or result.error,
        "outcome": outcome_label(f),
    }


def outcome_label(f: Finished) -> str:
    """The attempt outcome as stored and counted: success, http_4xx, http_5xx, gone, or the error kind."""
    status = f.result.status
    if status is None:
        return f.result.error or "error"
    if 200 <= status < 300:
        return "success"
    return f"http_{status // 100}xx" if status != 410 else "gone"


def _naive(when: datetime | None) -> datetime | None:
    if when is None or when.tzinfo is None:
        return when
    return when.astimezone(UTC).replace(tzinfo=None)


def _record_health(conn: sa.Connection, kept: Sequence[Finished], *, now: datetime) -> None:
    latest: dict[str, bool] = {}
    for f in kept:
        latest[f.claimed.endpoint] = f.result.outcome.succeeded
    endpoint_rows.record_outcomes(conn, latest, now=now)
    for f in kept:
        if f.decision.disable_endpoint:
            endpoint_rows.disable(
                conn, f.claimed.endpoint, reason=f"410 Gone from {f.claimed.url}", now=now, kind="gone"
            )


# --- operator actions ----------------------------------------------------------------------------


def cancel(conn: sa.Connection, ids: Sequence[int], *, now: datetime) -> int:
    """Stop pending or failed deliveries for good (an in-flight attempt finishes first)."""
    return _move(conn, "cancel", deliveries.c.id.in_(list(ids)), {}, now=now).rowcount if ids else 0


def replay(conn: sa.Connection, ids: Sequence[int], *, now: datetime) -> int:
    """Send failed, cancelled or delivered deliveries again, now, with a fresh retry schedule."""
    if not ids:
        return 0
    notify(conn)
    return _move(conn, "replay", deliveries.c.id.in_(list(ids)), _replay_values(now), now=now).rowcount


def recover_since(
    conn: sa.Connection, *, action_id: int, since: datetime, now: datetime, limit: int | None = None
) -> int:
    """Retry failed deliveries of ``action_id`` created at or after ``since``; returns how many.

    With ``limit``, at most that many (oldest first): call in a loop, one transaction per chunk,
    to show progress and keep transactions short on large backlogs.
    """
    d = deliveries.c
    where = sa.and_(d.action_id == action_id, d.created_at >= _naive(since), d.state == FAILED)
    if limit is not None:
        ids = list(conn.execute(sa.select(d.id).where(where).order_by(d.id).limit(limit)).scalars())
        if not ids:
            return 0
        where = sa.and_(where, d.id.in_(ids))
    notify(conn)
    return _move(conn, "replay", where, _replay_values(now), now=now).rowcount


def count_failed_since(conn: sa.Connection, *, action_id: int, since: datetime) -> int:
    """How many deliveries :func:`recover_since` would retry."""
    d = deliveries.c
    where = sa.and_(d.action_id == action_id, d.created_at >= _naive(since), d.state == FAILED)
    return int(conn.execute(sa.select(sa.func.count()).where(where)).scalar_one())


def _replay_values(now: datetime) -> dict[str, Any]:
    return {**_NO_LEASE, "next_attempt_at": now, "attempt_count": 0, "delivered_at": None}


def counts_by_state(conn: sa.Connection) -> dict[str, int]:
    """Queue depth per state (every state present, zero when empty)."""
    d = deliveries.c
    found: dict[str, int] = dict(conn.execute(sa.select(d.state, sa.func.count()).group_by(d.state)).all())
    return {state: int(found.get(state, 0)) for state in (PENDING, IN_FLIGHT, DELIVERED, FAILED, CANCELLED)}


def oldest_pending(conn: sa.Connection) -> datetime | None:
    """Creation time of the oldest delivery not yet finished."""
    d = deliveries.c
    return conn.execute(
        sa.select(sa.func.min(d.created_at)).where(d.state.in_([PENDING, IN_FLIGHT]))
    ).scalar()


def next_due(conn: sa.Connection) -> datetime | None:
    """When the earliest pending delivery is due (the dispatcher sleeps until then at most)."""
    d = deliveries.c
    return conn.execute(sa.select(sa.func.min(d.next_attempt_at)).where(d.state == PENDING)).scalar()
