"""Endpoints: one row per account and scheme+host+port, carrying its health and whether deliveries wait.

Endpoints are per account (spec/accounts.md): a 410 or days of failure from one account's URL hold
that account's deliveries only, and its throttles apply to that account's deliveries only. An
:class:`EndpointKey` names one.

A disabled endpoint's deliveries are not dropped; the claim query skips them until the endpoint is
enabled again. Every disable/enable leaves an ``endpoint_events`` row (the owner's notification and
the UI banner read them) and a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import sqlalchemy as sa

from contactsync.db.backend import backend_of
from contactsync.db.counting import Count, capped, matching, total
from contactsync.db.platform import deliveries, endpoint_events, endpoints
from contactsync.errors import ValidationError

log = logging.getLogger("contactsync.delivery.endpoints")

DEFAULT_MAX_IN_FLIGHT = 10


def endpoint_key(url: str) -> str:
    """``scheme://host:port`` of ``url``, lower-case, default port explicit: what health is tracked by.

    This is the ``endpoint`` an action stores and its deliveries carry, so it may never change for a
    URL: an IPv6 host keeps its brackets (``http://[::1]:80``, which cannot be read as a port of some
    other host) and a host is kept as written, never converted to its IDNA form.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationError(f"not an http(s) URL: {url!r}", field="url")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://[{host}]:{port}" if ":" in host else f"{parts.scheme}://{host}:{port}"


class EndpointKey(NamedTuple):
    """One account's endpoint: what health, throttles and notifications are tracked by."""

    account_id: int
    endpoint: str


def _key_is(key: EndpointKey) -> sa.ColumnElement[bool]:
    return sa.and_(endpoints.c.account_id == key.account_id, endpoints.c.endpoint == key.endpoint)


def _keys_in(keys: Iterable[EndpointKey]) -> sa.ColumnElement[bool]:
    return sa.tuple_(endpoints.c.account_id, endpoints.c.endpoint).in_([tuple(k) for k in keys])


def waiting(conn: sa.Connection, key: EndpointKey) -> Count:
    """Deliveries pending or in flight to the endpoint, counted up to a cap through the (account_id,
    state, endpoint, id) index: a failing endpoint's backlog is never read whole by a page or call."""
    d = deliveries.c
    return total(
        capped(
            conn,
            matching(
                deliveries,
                d.account_id == key.account_id,
                d.state == state,
                d.endpoint == key.endpoint,
                by=d.id,
            ),
        )
        for state in ("pending", "in_flight")
    )


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-endpoint throttles the dispatcher applies, over all dispatcher processes (delivery/slots.py)."""

    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    rate_limit_per_s: float | None = None


def ensure(
    conn: sa.Connection, keys: Iterable[EndpointKey], *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
) -> None:
    """Create missing endpoint rows; safe against a concurrent dispatcher doing the same."""
    wanted = sorted(set(keys))
    if not wanted:
        return
    rows = [
        {"account_id": k.account_id, "endpoint": k.endpoint, "max_in_flight": max_in_flight} for k in wanted
    ]
    backend = backend_of(conn)
    if backend.on_conflict:
        conn.execute(backend.insert_ignoring(endpoints, keys=["account_id", "endpoint"]), rows)
        return
    e = endpoints.c
    have = {
        EndpointKey(*r) for r in conn.execute(sa.select(e.account_id, e.endpoint).where(_keys_in(wanted)))
    }
    missing = [r for r, k in zip(rows, wanted, strict=True) if k not in have]
    if missing:
        conn.execute(endpoints.insert(), missing)


def limits(conn: sa.Connection, keys: Iterable[EndpointKey]) -> dict[EndpointKey, Limits]:
    """The throttles of ``keys`` (defaults for endpoints without a row)."""
    wanted = sorted(set(keys))
    found = {k: Limits() for k in wanted}
    if wanted:
        e = endpoints.c
        for row in conn.execute(
            sa.select(e.account_id, e.endpoint, e.max_in_flight, e.rate_limit_per_s).where(_keys_in(wanted))
        ):
            key = EndpointKey(row.account_id, row.endpoint)
            found[key] = Limits(max(int(row.max_in_flight), 1), row.rate_limit_per_s or None)
    return found


def set_limits(
    conn: sa.Connection,
    key: EndpointKey,
    *,
    max_in_flight: int,
    rate_limit_per_s: float | None,
    now: datetime,
) -> None:
    """The owner's throttles for one endpoint (dispatchers pick them up within their limits cache's
    lifetime); ``rate_limit_per_s=None`` sends as fast as ``max_in_flight`` allows."""
    conn.execute(
        endpoints.update()
        .where(_key_is(key))
        .values(max_in_flight=max_in_flight, rate_limit_per_s=rate_limit_per_s, edited_at=now)
    )


HEALTH_WRITE_INTERVAL_S = 1.0
"""A healthy endpoint's ``last_success_at`` is rewritten at most this often: every flush of every
dispatcher would otherwise update (and on PostgreSQL row-lock) the same row, serializing them."""


def record_outcomes(conn: sa.Connection, latest: Mapping[EndpointKey, bool], *, now: datetime) -> None:
    """Note each endpoint's latest attempt (``True`` = 2xx): success clears ``failing_since``."""
    if not latest:
        return
    e = endpoints.c
    fresh = now - timedelta(seconds=HEALTH_WRITE_INTERVAL_S)
    # a plain read first: rows that need no write are not touched (no lock, no ensure)
    seen = {
        EndpointKey(row.account_id, row.endpoint): row
        for row in conn.execute(
            sa.select(e.account_id, e.endpoint, e.failing_since, e.last_success_at).where(_keys_in(latest))
        )
    }
    missing = [n for n in latest if n not in seen]
    if missing:
        ensure(conn, missing)
    ok = [
        {"b_account": n.account_id, "b_endpoint": n.endpoint}
        for n, success in latest.items()
        if success
        and (
            n not in seen
            or seen[n].failing_since is not None
            or seen[n].last_success_at is None
            or seen[n].last_success_at < fresh
        )
    ]
    bad = [
        {"b_account": n.account_id, "b_endpoint": n.endpoint} for n, success in latest.items() if not success
    ]
    where = sa.and_(e.account_id == sa.bindparam("b_account"), e.endpoint == sa.bindparam("b_endpoint"))
    if ok:
        conn.execute(endpoints.update().where(where).values(last_success_at=now, failing_since=None), ok)
    if bad:
        values: dict[str, Any] = {
            "last_failure_at": now,
            "failing_since": sa.func.coalesce(e.failing_since, now),
        }
        conn.execute(endpoints.update().where(where).values(**values), bad)


def add_event(conn: sa.Connection, key: EndpointKey, *, kind: str, message: str, now: datetime) -> None:
    """An event about one account's endpoint for that account (UI banner, notification feed)."""
    conn.execute(
        endpoint_events.insert().values(
            account_id=key.account_id, endpoint=key.endpoint, kind=kind, message=message, created_at=now
        )
    )


def disable(
    conn: sa.Connection, key: EndpointKey, *, reason: str, now: datetime, kind: str = "disabled"
) -> bool:
    """Stop delivering to ``key`` (its deliveries wait); ``False`` if it already was disabled."""
    ensure(conn, [key])
    moved = conn.execute(
        endpoints.update()
        .where(_key_is(key), endpoints.c.disabled_at.is_(None))
        .values(disabled_at=now, disabled_reason=reason)
    ).rowcount
    if not moved:
        return False
    add_event(conn, key, kind=kind, message=reason, now=now)
    log.warning(
        "endpoint disabled",
        extra={"account_id": key.account_id, "endpoint": key.endpoint, "reason": reason, "kind": kind},
    )
    return True


def enable(conn: sa.Connection, key: EndpointKey, *, now: datetime, edited: bool = False) -> bool:
    """Resume deliveries to ``key``; its failure streak starts afresh. ``False`` if it was enabled."""
    ensure(conn, [key])
    values: dict[str, Any] = {"disabled_at": None, "disabled_reason": None, "failing_since": None}
    if edited:
        values["edited_at"] = now
    moved = conn.execute(
        endpoints.update().where(_key_is(key), endpoints.c.disabled_at.is_not(None)).values(**values)
    )
    if not moved.rowcount:
        return False
    add_event(conn, key, kind="enabled", message="deliveries resumed", now=now)
    log.info("endpoint enabled", extra={"account_id": key.account_id, "endpoint": key.endpoint})
    return True


def mark_edited(conn: sa.Connection, key: EndpointKey, *, now: datetime) -> None:
    """Record that the owner changed the action's URL or settings: no auto-disable for 48 h."""
    ensure(conn, [key])
    conn.execute(endpoints.update().where(_key_is(key)).values(edited_at=now))


def disabled(conn: sa.Connection) -> list[EndpointKey]:
    """The endpoints currently disabled, every account's (the operator's view)."""
    e = endpoints.c
    rows = conn.execute(
        sa.select(e.account_id, e.endpoint)
        .where(e.disabled_at.is_not(None))
        .order_by(e.account_id, e.endpoint)
    )
    return [EndpointKey(*r) for r in rows]
