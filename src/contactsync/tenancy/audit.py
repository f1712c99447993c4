"""The audit log: who changed what, in which account, when — one row per change, in its transaction.

Every change through the API, the admin UI or the CLI records one row in the same transaction as
the change itself, so the log never names a change that was rolled back nor misses one that was
committed. The actor is a user (UI), an API key, or the CLI run on the server (whose operating
system user is named, since whoever can run it can read the database anyway).
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel

from contactsync.db.platform import audit_log

ActorKind = Literal["user", "key", "cli"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """Who made a change: ``kind`` and ``id`` (user or key id; none for the CLI) and a readable label."""

    kind: ActorKind
    id: int | None
    label: str

    @classmethod
    def cli(cls) -> Actor:
        try:
            who = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            who = "unknown"
        return cls(kind="cli", id=None, label=f"cli:{who}"[:320])


class AuditEntry(BaseModel):
    id: int
    at: datetime
    account_id: int | None
    actor_kind: str
    actor_id: int | None
    actor_label: str
    action: str
    target_type: str
    target_id: str | None
    detail: dict[str, Any]


def record(
    conn: sa.Connection,
    actor: Actor,
    action: str,
    *,
    account_id: int | None,
    target_type: str,
    target_id: int | str | None = None,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """One audit row for a change made in ``conn``'s transaction (``action``: ``<thing>.<verb>``)."""
    conn.execute(
        audit_log.insert().values(
            at=now,
            account_id=account_id,
            actor_kind=actor.kind,
            actor_id=actor.id,
            actor_label=actor.label[:320],
            action=action[:64],
            target_type=target_type[:32],
            target_id=None if target_id is None else str(target_id)[:64],
            detail=dict(detail or {}),
        )
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilter:
    account_id: int | None
    """None: every account (the operator's view)."""
    actor: str = ""
    """A substring of the actor's label (an email, a key name or prefix), in any case."""
    action: str = ""
    """An action, or its prefix (``automation.`` for every automation change), in any case."""
    target_type: str = ""
    target_id: str = ""
    since: datetime | None = None
    until: datetime | None = None


def entries(
    conn: sa.Connection, where: AuditFilter, *, before_id: int | None = None, limit: int = 50
) -> Sequence[AuditEntry]:
    """Newest first, ``limit`` entries older than ``before_id`` (keyset: flat however long the log)."""
    a = audit_log.c
    query = sa.select(audit_log).order_by(a.id.desc()).limit(limit)
    if where.account_id is not None:
        query = query.where(a.account_id == where.account_id)
    if where.actor:
        query = query.where(a.actor_label.icontains(where.actor, autoescape=True))
    if where.action:  # LIKE ignores case on SQLite but not on PostgreSQL: say which, on both
        query = query.where(a.action.istartswith(where.action, autoescape=True))
    if where.target_type:
        query = query.where(a.target_type == where.target_type)
    if where.target_id:
        query = query.where(a.target_id == where.target_id)
    if where.since is not None:
        query = query.where(a.at >= where.since)
    if where.until is not None:
        query = query.where(a.at < where.until)
    if before_id is not None:
        query = query.where(a.id < before_id)
    return [AuditEntry.model_validate(r._asdict()) for r in conn.execute(query)]
