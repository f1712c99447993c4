"""The delivery state machine: every change of ``deliveries.state`` goes through :func:`move`.

``pending → in_flight → delivered | pending (retry) | failed | cancelled``, plus ``release``
(in-flight work given back unattempted), ``replay`` (finished work sent again) and ``hurry`` (a
retrying delivery's next attempt brought forward to now).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from contactsync.db.platform import deliveries

PENDING, IN_FLIGHT, DELIVERED, FAILED, CANCELLED = "pending", "in_flight", "delivered", "failed", "cancelled"


@dataclass(frozen=True, slots=True)
class Transition:
    """Which states an event may move a delivery from, and the state it moves it to."""

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
    # a retrying delivery (pending after failed attempts) tried now rather than at its next time
    "hurry": Transition(frozenset({PENDING}), PENDING),
}
"""Every state change of a delivery; nothing else writes ``deliveries.state``."""

NO_LEASE: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}


def statement(
    event: str, where: sa.ColumnElement[bool], values: Mapping[str, Any], *, now: Any, returning: bool = False
) -> sa.Update:
    """The UPDATE applying transition ``event`` to the rows matching ``where`` (``now``: a value or a
    bound parameter, so hot paths can build the statement once and execute it many times)."""
    step = TRANSITIONS[event]
    d = deliveries.c
    stmt = (
        deliveries.update()
        .where(where, sa.or_(*(d.state == source for source in sorted(step.sources))))
        .values(state=step.target, updated_at=now, **values)
    )
    return stmt.returning(d.id) if returning else stmt


def move(
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
    stmt = statement(event, where, values, now=now, returning=returning)
    return conn.execute(stmt, list(params)) if params else conn.execute(stmt)


def naive(when: datetime | None) -> datetime | None:
    """A datetime as the database stores it: naive UTC."""
    if when is None or when.tzinfo is None:
        return when
    return when.astimezone(UTC).replace(tzinfo=None)
