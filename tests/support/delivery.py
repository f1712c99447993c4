"""Helpers for the delivery tests: a migrated platform database with one action, and outbox rows."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from contactsync.db import platform as t
from contactsync.delivery.outbox import OutboxRequest, enqueue

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="


def seed_action(
    conn: sa.Connection,
    *,
    now: datetime,
    endpoint: str = "http://127.0.0.1:1",
    settings: Mapping[str, Any] | None = None,
    secret: str = SECRET,
    previous_secret: str | None = None,
    previous_secret_expires_at: datetime | None = None,
) -> int:
    """An account, list, automation and sync action; returns the action id."""
    account_id = conn.execute(
        t.accounts.insert().values(name="acme", created_at=now).returning(t.accounts.c.id)
    ).scalar_one()
    list_id = conn.execute(
        t.lists.insert().values(account_id=account_id, name="l", created_at=now).returning(t.lists.c.id)
    ).scalar_one()
    automation_id = conn.execute(
        t.automations.insert()
        .values(
            list_id=list_id,
            name="a",
            trigger="contact.created",
            conditions={},
            created_at=now,
            updated_at=now,
        )
        .returning(t.automations.c.id)
    ).scalar_one()
    return int(
        conn.execute(
            t.actions.insert()
            .values(
                automation_id=automation_id,
                settings=dict(settings or {}),
                secret=secret,
                previous_secret=previous_secret,
                previous_secret_expires_at=previous_secret_expires_at,
                endpoint=endpoint,
                created_at=now,
                updated_at=now,
            )
            .returning(t.actions.c.id)
        ).scalar_one()
    )


def request(
    tid: int,
    url: str,
    *,
    action_id: int | None = None,
    body: bytes | None = None,
    method: str = "POST",
    ordering_key: str | None = None,
    contact_id: int | None = None,
) -> OutboxRequest:
    """A form-encoded outbox request numbered ``tid``."""
    from contactsync.delivery.endpoints import endpoint_key

    return OutboxRequest(
        transactionid=tid,
        endpoint=endpoint_key(url),
        method=method,
        url=url,
        body=body if body is not None else (b"" if method == "GET" else f"transactionid={tid}&n=1".encode()),
        content_type="" if method == "GET" else "application/x-www-form-urlencoded",
        headers={"X-Api-Key": "k"},
        action_id=action_id,
        contact_id=contact_id,
        ordering_key=ordering_key,
    )


def enqueue_many(engine: sa.Engine, requests: list[OutboxRequest], *, now: datetime) -> None:
    with engine.begin() as conn:
        enqueue(conn, requests, now=now)
