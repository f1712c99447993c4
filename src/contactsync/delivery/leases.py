"""Claiming: due deliveries leased to one dispatcher for one attempt each, in batches.

PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets any number of dispatchers claim side by side. SQLite:
claims are serialized by the database's single writer (one dispatcher process is the set-up). A
lease expires unless extended, so a dispatcher that dies mid-attempt strands nothing; its token
fences late results (see :func:`contactsync.delivery.outbox.finish`).
"""

from __future__ import annotations

import enum
import functools
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from contactsync.db.backend import Backend, backend_of
from contactsync.db.platform import accounts, actions, deliveries, endpoints
from contactsync.db.sealing import Keyring, is_sealed
from contactsync.delivery.attempt import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TOTAL_TIMEOUT_S
from contactsync.delivery.endpoints import EndpointKey
from contactsync.delivery.retry import DEFAULT_SCHEDULE_S
from contactsync.delivery.states import IN_FLIGHT, NO_LEASE, PENDING, TRANSITIONS, move
from contactsync.errors import SealedError

SETTING_SCHEDULE = "retry_schedule_s"
SETTING_CONNECT_TIMEOUT = "connect_timeout_s"
SETTING_TOTAL_TIMEOUT = "timeout_s"
"""Keys of ``actions.settings`` the dispatcher reads (absent: delivery.md defaults)."""


class Lane(enum.StrEnum):
    """First attempts and retries are claimed separately so a retry backlog never delays new work."""

    FIRST = "first"
    RETRY = "retry"


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """A delivery leased to one dispatcher for one attempt, with what it needs to send and judge it."""

    id: int
    transactionid: int
    account_id: int
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
    ordering_key: str | None = None
    """Set for "ordered per contact" deliveries: the next one of the key waits until this one is done."""
    secrets: tuple[str, ...] = ()
    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S

    @property
    def endpoint_key(self) -> EndpointKey:
        """The owning account's endpoint: what its throttles and health are tracked by."""
        return EndpointKey(self.account_id, self.endpoint)


_CLAIM_COLUMNS = (
    deliveries.c.id, deliveries.c.transactionid, deliveries.c.account_id, deliveries.c.endpoint,
    deliveries.c.method, deliveries.c.url, deliveries.c.headers, deliveries.c.body, deliveries.c.content_type,
    deliveries.c.attempt_count, deliveries.c.created_at, deliveries.c.action_id, deliveries.c.ordering_key,
)  # fmt: skip


def new_lease(owner: str) -> str:
    """A lease token: owner name plus a random part, so a stale owner never finishes a re-claimed row."""
    return f"{owner[:80]}/{uuid.uuid4().hex[:16]}"


_OLDER = deliveries.alias("older")


def _claimable(lane: Lane | None, *, expired: bool, skip: bool) -> list[sa.ColumnElement[bool]]:
    """What makes a row claimable now (``b_now``; ``b_skip``: endpoints saturated in this process)."""
    d = deliveries.c
    now = sa.bindparam("b_now", type_=sa.DateTime())
    due = (
        sa.and_(d.state == IN_FLIGHT, d.lease_expires_at <= now)
        if expired
        else sa.and_(d.state == PENDING, d.next_attempt_at <= now)
    )
    conds: list[sa.ColumnElement[bool]] = [
        due,
        # a delivery whose body is still to be rendered when its delay ends is never sent as it is
        d.render_pending.is_(None),
        ~sa.exists().where(
            endpoints.c.account_id == d.account_id,
            endpoints.c.endpoint == d.endpoint,
            endpoints.c.disabled_at.is_not(None),
        ),
        # a suspended account's deliveries wait, untouched, until it is reactivated
        ~sa.exists().where(accounts.c.id == d.account_id, accounts.c.suspended_at.is_not(None)),
        sa.or_(
            d.ordering_key.is_(None),
            ~sa.exists().where(
                _OLDER.c.ordering_key == d.ordering_key,
                _OLDER.c.transactionid < d.transactionid,
                # not IN (…): an expanding list would make the claim's SQL text vary
                sa.or_(_OLDER.c.state == PENDING, _OLDER.c.state == IN_FLIGHT),
            ),
        ),
    ]
    if lane is Lane.FIRST:
        conds.append(d.attempt_count == 0)
    elif lane is Lane.RETRY:
        conds.append(d.attempt_count > 0)
    if skip:
        conds.append(sa.tuple_(d.account_id, d.endpoint).not_in(sa.bindparam("b_skip", expanding=True)))
    return conds


_ACTION_COLUMNS = (
    actions.c.secret,
    actions.c.previous_secret,
    actions.c.previous_secret_expires_at,
    actions.c.settings,
)


def _pick(backend: Backend, lane: Lane | None, *, expired: bool, skip: bool, limit: Any) -> sa.CTE:
    d = deliveries.c
    pick = (
        sa.select(d.id)
        .where(*_claimable(lane, expired=expired, skip=skip))
        .order_by(d.next_attempt_at, d.id)
        .limit(limit)
    )
    return backend.skip_locked(pick, of=deliveries).cte("expired" if expired else "due")


@functools.cache
def _claim_statement(backend: Backend, lane: Lane | None, *, skip: bool) -> sa.Update:
    """One ``UPDATE … WHERE id IN (expired ∪ due) RETURNING …`` per claim, built once per shape.

    Two picks, expired leases first, each walking the (state, next_attempt_at, id) index in the
    claim's order (one OR would not; :meth:`Backend.planned_on_indexes` keeps PostgreSQL from
    sorting the backlog instead), under one limit: the due pick is read only for what the expired one left.
    Only sources of the "claim" transition are picked; repeating the state test outside would make
    SQLite scan every pending row by state instead of looking the picked ids up. PostgreSQL locks
    the picked rows with ``SKIP LOCKED`` and re-checks them once locked. The action's secrets and
    settings come back with each row (scalar subqueries in RETURNING: SQLite cannot return joined
    columns).
    """
    d = deliveries.c
    assert {PENDING, IN_FLIGHT} <= TRANSITIONS["claim"].sources
    limit = sa.bindparam("b_limit", type_=sa.Integer())
    expired = _pick(backend, lane, expired=True, skip=skip, limit=limit)
    due = _pick(backend, lane, expired=False, skip=skip, limit=limit)
    picked = sa.union_all(sa.select(expired.c.id), sa.select(due.c.id)).limit(limit)
    of_action = [
        sa.select(col).where(actions.c.id == d.action_id).scalar_subquery().label(col.name)
        for col in _ACTION_COLUMNS
    ]
    return (
        deliveries.update()
        .where(d.id.in_(picked))
        .values(
            state=TRANSITIONS["claim"].target,
            lease_owner=sa.bindparam("b_lease"),
            lease_expires_at=sa.bindparam("b_expires", type_=sa.DateTime()),
            updated_at=sa.bindparam("b_now", type_=sa.DateTime()),
        )
        .returning(*_CLAIM_COLUMNS, *of_action)
    )


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A statement compiled once to its SQL text, run through ``exec_driver_sql``: no cache-key walk
    of a large statement per call, and rows come back as the driver gives them (no per-row type
    processing; the caller decodes the few columns that need it)."""

    sql: str
    names: tuple[str, ...] | None
    """Bind names in order (positional drivers); ``None``: the driver takes them by name."""
    constants: Mapping[str, Any]
    as_text: bool
    """Datetimes go to the driver as text (SQLite's, as SQLAlchemy stores them there)."""

    def run(self, conn: sa.Connection, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        values = {**self.constants, **params}
        if self.as_text:  # as SQLAlchemy stores them there: ISO text with microseconds
            values = {
                k: v.isoformat(" ", "microseconds") if isinstance(v, datetime) else v
                for k, v in values.items()
            }
        args: Any = values if self.names is None else tuple(values[n] for n in self.names)
        return conn.exec_driver_sql(self.sql, args).fetchall()


_PREPARED: dict[tuple[Backend, Lane | None], _Prepared] = {}


def _claim_prepared(conn: sa.Connection, backend: Backend, lane: Lane | None) -> _Prepared:
    """The claim's SQL text for ``conn``'s database, compiled on first use."""
    prepared = _PREPARED.get((backend, lane))
    if prepared is None:
        compiled = _claim_statement(backend, lane, skip=False).compile(bind=conn)
        constants = {k: v for k, v in compiled.params.items() if not k.startswith("b_")}
        names = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        prepared = _PREPARED[backend, lane] = _Prepared(
            compiled.string, names, constants, as_text=not backend.native_types
        )
    return prepared


def claim(
    conn: sa.Connection,
    *,
    owner: str,
    now: datetime,
    lease_s: float,
    limit: int,
    lane: Lane | None = None,
    skip_endpoints: Sequence[EndpointKey] = (),
    keyring: Keyring | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries to ``owner`` for ``lease_s`` seconds (commit to publish).

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets any number of dispatchers claim side by side without
    waiting on each other. SQLite: the transaction holds the database's write lock (``BEGIN
    IMMEDIATE``), so claims are serialized — one dispatcher process is the supported set-up there.
    Expired leases (a dispatcher that died mid-attempt) are claimable like pending rows, and first.
    Sealed secrets and header values are opened with ``keyring``; a delivery whose secret or headers
    cannot be opened is claimed without secrets, so that it fails instead of going out unsigned.
    One statement per call, whatever the batch size.
    """
    if limit <= 0:
        return []
    lease = new_lease(owner)
    params: dict[str, Any] = {
        "b_now": now,
        "b_lease": lease,
        "b_expires": now + timedelta(seconds=lease_s),
        "b_limit": limit,
    }
    backend = backend_of(conn)
    rows: Sequence[Sequence[Any]]
    with backend.planned_on_indexes(conn):
        if skip_endpoints:  # the skip list expands in the SQL text: SQLAlchemy's own (cached) path
            params["b_skip"] = [tuple(k) for k in skip_endpoints]
            stmt = _claim_statement(backend, lane, skip=True)
            rows = [tuple(r) for r in conn.execute(stmt, params)]
            decoded = True
        else:
            rows = _claim_prepared(conn, backend, lane).run(conn, params)
            decoded = backend.native_types
    if not rows:
        return []
    settings: dict[int | None, _ActionSettings] = {}
    opened: dict[tuple[str, str], str | None] = {}
    parsed: dict[str, dict[str, str]] = {}
    claimed = []
    for (
        id_,
        transactionid,
        account_id,
        endpoint,
        method,
        url,
        stored,
        body,
        content_type,
        attempt_count,
        created_at,
        action_id,
        ordering_key,
        *action,
    ) in rows:
        found = settings.get(action_id)
        if found is None:
            found = settings[action_id] = (
                _NO_ACTION
                if action_id is None or action[0] is None
                else _settings_of(action, now, keyring, decoded=decoded)
            )
        secrets, schedule, connect_s, total_s = found
        if not decoded:  # SQLite: JSON text (the same for every delivery of an action) and time text
            text = stored
            stored = parsed.get(text)
            if stored is None:
                stored = parsed[text] = json.loads(text) if text else {}
            created_at = datetime.fromisoformat(created_at)
        if stored:
            headers = _open_headers(stored, keyring, opened)
            if headers is None:
                headers, secrets = {}, ()
        else:
            headers = {}
        claimed.append(
            Claimed(
                id=id_,
                transactionid=transactionid,
                account_id=account_id,
                endpoint=endpoint,
                method=method,
                url=url,
                headers=headers,
                body=bytes(body),
                content_type=content_type,
                attempt=attempt_count + 1,
                lease=lease,
                created_at=created_at,
                action_id=action_id,
                ordering_key=ordering_key,
                secrets=secrets,
                schedule_s=schedule,
                connect_timeout_s=connect_s,
                total_timeout_s=total_s,
            )
        )
    claimed.sort(key=_by_transactionid)
    return claimed


def _by_transactionid(c: Claimed) -> int:
    return c.transactionid


_ActionSettings = tuple[tuple[str, ...], tuple[float, ...], float, float]
_NO_ACTION: _ActionSettings = ((), DEFAULT_SCHEDULE_S, DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TOTAL_TIMEOUT_S)


def _open(value: str, keyring: Keyring | None) -> str | None:
    """The plaintext of a stored value, or ``None`` when it cannot be opened."""
    if keyring is None:
        return None if is_sealed(value) else value
    try:
        return keyring.open(value)
    except SealedError:
        return None


def _open_headers(
    stored: Mapping[str, str], keyring: Keyring | None, opened: dict[tuple[str, str], str | None]
) -> dict[str, str] | None:
    """The static headers in plaintext (``None`` if one cannot be opened); ``opened`` remembers
    values already opened in this batch (every delivery of an action carries the same ones)."""
    headers: dict[str, str] = {}
    for k, v in stored.items():
        name, value = str(k), str(v)
        plain = opened.get((name, value), _UNSEEN)
        if plain is _UNSEEN:
            plain = opened[name, value] = _open(value, keyring)
        if plain is None:
            return None
        headers[name] = plain
    return headers


_UNSEEN = "\0unseen"


def _settings_of(
    action: Sequence[Any], now: datetime, keyring: Keyring | None, *, decoded: bool
) -> _ActionSettings:
    """Secrets valid now (two during rotation) and the per-action timeouts and schedule, from the
    action's columns (``decoded``: JSON and times already Python values, else SQLite's text)."""
    secret, previous, expires, options = action
    if not decoded:
        expires = None if expires is None else datetime.fromisoformat(expires)
        options = None if options is None else json.loads(options)
    secrets = [_open(secret, keyring)]
    if previous and (expires is None or expires > now):
        secrets.append(_open(previous, keyring))
    opts = options if isinstance(options, dict) else {}
    schedule = tuple(float(s) for s in opts.get(SETTING_SCHEDULE) or DEFAULT_SCHEDULE_S)
    return (
        tuple(s for s in secrets if s is not None) if secrets[0] is not None else (),
        schedule,
        float(opts.get(SETTING_CONNECT_TIMEOUT) or DEFAULT_CONNECT_TIMEOUT_S),
        float(opts.get(SETTING_TOTAL_TIMEOUT) or DEFAULT_TOTAL_TIMEOUT_S),
    )


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
        move(conn, "release", sa.and_(d.id.in_(ids), d.lease_owner == lease), NO_LEASE, now=now).rowcount
        for lease, ids in _by_lease(claimed).items()
    )


def _by_lease(claimed: Sequence[Claimed]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for c in claimed:
        grouped.setdefault(c.lease, []).append(c.id)
    return grouped
