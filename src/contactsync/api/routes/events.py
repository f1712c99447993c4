"""Batched activity ingestion: one transaction per batch, automations evaluated inside it."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from contactsync.api.deps import Ctx, Editor, account_lists, audit
from contactsync.api.errors import ERROR_RESPONSES
from contactsync.api.routing import UtcRoute
from contactsync.automation.activity import Event
from contactsync.automation.events import ingest_events
from contactsync.db.platform import contacts
from contactsync.errors import NotFoundError

router = APIRouter(tags=["events"], responses=ERROR_RESPONSES, route_class=UtcRoute)

MAX_BATCH = 1000


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH)


class IngestOut(BaseModel):
    accepted: int
    entries: int = Field(description="contacts that entered an automation")
    transactionids: list[str] = Field(description="deliveries queued, committed with the events")


@router.post("/events", status_code=202)
def ingest(body: EventBatch, ctx: Ctx, caller: Editor) -> IngestOut:
    """Store a batch of activity events (all or none) and run the automations they trigger."""
    with ctx.tx() as conn:
        _own_subjects(conn, caller.account_id, body)
        fired = ingest_events(conn, ctx.runtime, body.events)
        audit(
            conn,
            ctx,
            caller,
            "events.ingest",
            "events",
            None,
            accepted=len(body.events),
            entries=fired.entries,
        )
    if fired.transactionids:
        ctx.wake()
    return IngestOut(
        accepted=len(body.events),
        entries=fired.entries,
        transactionids=[str(t) for t in fired.transactionids],
    )


def _own_subjects(conn: sa.Connection, account_id: int, body: EventBatch) -> None:
    """Every event must name a contact or list of the caller's account (others look nonexistent)."""
    mine = set(conn.execute(account_lists(account_id)).scalars())
    ids = sorted({e.contact_id for e in body.events if e.contact_id is not None})
    owned: set[int] = set()
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        owned.update(
            conn.execute(
                sa.select(contacts.c.id).where(contacts.c.id.in_(part), contacts.c.list_id.in_(mine))
            ).scalars()
        )
    for i, e in enumerate(body.events):
        if e.contact_id is not None and e.contact_id not in owned:
            raise NotFoundError(f"contact {e.contact_id} does not exist", field=f"events[{i}].contact_id")
        if e.contact_id is None and e.list_id not in mine:
            raise NotFoundError(f"list {e.list_id} does not exist", field=f"events[{i}].list_id")
