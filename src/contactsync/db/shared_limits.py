"""Per-endpoint throttles shared by every dispatcher process of one PostgreSQL database.

Two tables (db/platform.py): ``endpoint_slots`` holds one leased row per in-flight slot an
endpoint has given out (numbered below its ``max_in_flight``), ``endpoint_buckets`` one token
bucket per rate-limited endpoint. Every statement here serves any number of endpoints at once
(arrays unnested server-side), so a dispatcher pays one statement per kind of change per batch,
never one per delivery. Times are the database's (``statement_timestamp()``): processes on
different machines share one clock for lease expiry and bucket refill.

SQLite has one dispatcher process by design (single writer): :func:`supported` is the one place
that says which databases need this; the dispatcher keeps its in-process throttles elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from contactsync.db.platform import dispatchers

_NOW = "(statement_timestamp() AT TIME ZONE 'UTC')"

Key = tuple[int, str]
"""``(account_id, endpoint)``: an account's endpoint (delivery/endpoints.py ``EndpointKey``)."""


def supported(engine: sa.Engine) -> bool:
    """Whether several dispatcher processes may share ``engine``'s database (and so these limits)."""
    return engine.dialect.name == "postgresql"


@dataclass(frozen=True, slots=True)
class SlotWant:
    """Up to ``want`` more slots of ``key``, whose cap is ``cap`` in flight over all processes."""

    key: Key
    cap: int
    want: int


@dataclass(frozen=True, slots=True)
class TokenWant:
    """Up to ``want`` starts of ``key`` now, from a bucket of ``burst`` tokens refilled at ``rate_per_s``."""

    key: Key
    rate_per_s: float
    burst: float
    want: int


@dataclass(frozen=True, slots=True)
class Grant:
    """What the bucket of one endpoint gave: ``granted`` tokens, ``left`` (fractional) remaining."""

    granted: int
    left: float


_TAKE = sa.text(
    f"""
INSERT INTO endpoint_slots (account_id, endpoint, slot, holder, expires_at)
SELECT w.account_id, w.endpoint, g.slot, :holder, {_NOW} + make_interval(secs => :lease_s)
FROM unnest(CAST(:accounts AS bigint[]), CAST(:endpoints AS varchar[]), CAST(:caps AS int[]),
            CAST(:wants AS int[])) AS w(account_id, endpoint, cap, want)
CROSS JOIN LATERAL (
    SELECT s.slot FROM generate_series(0, w.cap - 1) AS s(slot)
    WHERE NOT EXISTS (
        SELECT 1 FROM endpoint_slots AS h
        WHERE h.account_id = w.account_id AND h.endpoint = w.endpoint AND h.slot = s.slot
          AND h.expires_at > {_NOW})
    ORDER BY random() LIMIT w.want
) AS g
ORDER BY w.account_id, w.endpoint, g.slot
ON CONFLICT (account_id, endpoint, slot) DO UPDATE
SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE endpoint_slots.expires_at <= {_NOW}
RETURNING account_id, endpoint, slot
"""
)
"""Free slot numbers below each cap (never held, or held by a lease that expired), a random few per
endpoint so processes rarely pick the same ones. Two processes proposing one slot at once: the
second's ``ON CONFLICT`` sees the first's committed lease and skips it, so a slot has one holder."""

_RELEASE = sa.text(
    """
DELETE FROM endpoint_slots AS h
USING unnest(CAST(:accounts AS bigint[]), CAST(:endpoints AS varchar[]), CAST(:slots AS int[]))
      AS r(account_id, endpoint, slot)
WHERE h.account_id = r.account_id AND h.endpoint = r.endpoint AND h.slot = r.slot AND h.holder = :holder
"""
)

_RELEASE_ALL = sa.text("DELETE FROM endpoint_slots WHERE holder = :holder")

_EXTEND = sa.text(
    f"""
UPDATE endpoint_slots SET expires_at = {_NOW} + make_interval(secs => :lease_s)
WHERE holder = :holder AND expires_at > {_NOW}
RETURNING account_id, endpoint, slot
"""
)
"""Only leases not yet expired: an expired slot may already be someone else's."""

_AVAILABLE = f"LEAST(w.burst, b.tokens + GREATEST(0, EXTRACT(EPOCH FROM ({_NOW} - b.stamp))) * w.rate)"
_GRANTED = f"LEAST(w.want, FLOOR({_AVAILABLE}))"
_WANTS = """unnest(CAST(:accounts AS bigint[]), CAST(:endpoints AS varchar[]),
                   CAST(:rates AS double precision[]), CAST(:bursts AS double precision[]),
                   CAST(:wants AS int[])) AS w(account_id, endpoint, rate, burst, want)"""

_TOKENS = sa.text(
    f"""
UPDATE endpoint_buckets AS b
SET granted = {_GRANTED}, tokens = {_AVAILABLE} - {_GRANTED}, stamp = GREATEST(b.stamp, {_NOW})
FROM {_WANTS}
WHERE b.account_id = w.account_id AND b.endpoint = w.endpoint
RETURNING b.account_id, b.endpoint, b.granted, b.tokens
"""
)
"""Refill since the last grant (capped at the burst), hand out what is wanted of it, keep the rest.
Set expressions read the row as locked, so concurrent grants queue on the row and never overdraw."""

_NEW_BUCKETS = sa.text(
    f"""
INSERT INTO endpoint_buckets (account_id, endpoint, tokens, granted, stamp)
SELECT w.account_id, w.endpoint, w.burst, 0, {_NOW} FROM {_WANTS}
ON CONFLICT (account_id, endpoint) DO NOTHING
"""
)
"""A new bucket starts full, like the in-process one."""


def take_slots(
    conn: sa.Connection, wants: Sequence[SlotWant], *, holder: str, lease_s: float
) -> list[tuple[Key, int]]:
    """Lease free slots to ``holder`` for ``lease_s`` seconds: ``(key, slot number)`` of each taken."""
    wants = sorted((w for w in wants if w.want > 0 and w.cap > 0), key=lambda w: w.key)
    if not wants:
        return []
    rows = conn.execute(
        _TAKE,
        {
            "holder": holder,
            "lease_s": float(lease_s),
            "accounts": [w.key[0] for w in wants],
            "endpoints": [w.key[1] for w in wants],
            "caps": [w.cap for w in wants],
            "wants": [min(w.want, w.cap) for w in wants],
        },
    )
    return [((int(r.account_id), str(r.endpoint)), int(r.slot)) for r in rows]


def release_slots(conn: sa.Connection, slots: Iterable[tuple[Key, int]], *, holder: str) -> int:
    """Give slots back (an attempt ended and nothing of this holder waits for the endpoint)."""
    given = sorted(slots)
    if not given:
        return 0
    params = {
        "holder": holder,
        "accounts": [k[0] for k, _ in given],
        "endpoints": [k[1] for k, _ in given],
        "slots": [n for _, n in given],
    }
    return int(conn.execute(_RELEASE, params).rowcount)


def release_all(conn: sa.Connection, *, holder: str) -> int:
    """Give back every slot of ``holder`` (a dispatcher shutting down)."""
    return int(conn.execute(_RELEASE_ALL, {"holder": holder}).rowcount)


def extend_slots(conn: sa.Connection, *, holder: str, lease_s: float) -> set[tuple[Key, int]]:
    """Renew ``holder``'s unexpired slot leases; returns those it still holds (the others are lost)."""
    rows = conn.execute(_EXTEND, {"holder": holder, "lease_s": float(lease_s)})
    return {((int(r.account_id), str(r.endpoint)), int(r.slot)) for r in rows}


def live_dispatchers(conn: sa.Connection, *, alive_within_s: float) -> int:
    """How many dispatcher processes noted that they are alive lately (delivery/presence.py)."""
    since = sa.text(f"{_NOW} - make_interval(secs => :alive_s)").bindparams(alive_s=float(alive_within_s))
    query = sa.select(sa.func.count()).where(dispatchers.c.last_seen_at >= since)
    return int(conn.execute(query).scalar_one())


def take_tokens(conn: sa.Connection, wants: Sequence[TokenWant]) -> dict[Key, Grant]:
    """Take up to ``want`` tokens from each endpoint's shared bucket (created full when missing)."""
    wants = sorted((w for w in wants if w.want > 0), key=lambda w: w.key)
    if not wants:
        return {}
    grants = _grant(conn, wants)
    missing = [w for w in wants if w.key not in grants]
    if missing:
        conn.execute(_NEW_BUCKETS, _token_params(missing))
        grants.update(_grant(conn, missing))
    return grants


def _grant(conn: sa.Connection, wants: Sequence[TokenWant]) -> dict[Key, Grant]:
    return {
        (int(r.account_id), str(r.endpoint)): Grant(int(r.granted), float(r.tokens))
        for r in conn.execute(_TOKENS, _token_params(wants))
    }


def _token_params(wants: Sequence[TokenWant]) -> dict[str, object]:
    return {
        "accounts": [w.key[0] for w in wants],
        "endpoints": [w.key[1] for w in wants],
        "rates": [float(w.rate_per_s) for w in wants],
        "bursts": [float(w.burst) for w in wants],
        "wants": [w.want for w in wants],
    }
