"""The outbox: frozen requests written in the transaction of the event that caused them.

A row holds everything needed to send the request later, byte for byte (method, URL, static headers,
body, transactionid); the signature is computed per attempt, so it is not stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from contactsync.db.platform import deliveries


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
