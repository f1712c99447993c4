"""Contacts: upsert by email, read, patch, delete, list with pagination, bulk import (CSV/NDJSON).

Writes go through the event path's ``save_contact``, so a created or changed contact fires its
automations and the resulting outbox rows commit with the contact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from contactsync.api.deps import ApiContext, Ctx, Editor, Id, Viewer, audit, own_contact, own_list
from contactsync.api.errors import ERROR_RESPONSES
from contactsync.api.pagination import Cursor, Limit, Page, after, cut
from contactsync.api.routing import UtcRoute
from contactsync.automation import contacts as svc
from contactsync.automation import imports
from contactsync.automation.events import entries_by_automation, save_contact
from contactsync.db.platform import activities
from contactsync.db.platform import contacts as contacts_table
from contactsync.errors import DuplicateKeyError
from contactsync.tenancy.keys import Principal

router = APIRouter(tags=["contacts"], responses=ERROR_RESPONSES, route_class=UtcRoute)


class UpsertOut(BaseModel):
    contact: svc.ContactOut
    created: bool
    changed: bool
    changed_fields: list[int]
    transactionids: list[str] = Field(description="deliveries queued because of this change")


class ContactPatch(BaseModel):
    """Change a contact found by id; the email is its identity within the list and is not changed here."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    phone: str | None = Field(default=None, max_length=64)
    status: str | None = Field(default=None, min_length=1, max_length=32)
    fields: dict[str, str | int | float | None] = Field(default_factory=dict)


UPSERT_ATTEMPTS = 3


def _save(ctx: ApiContext, caller: Principal, data: svc.ContactIn, action: str) -> UpsertOut:
    """Upsert in one transaction, audited in it; when a concurrent upsert of the same email wins the
    unique key, try again: the retry finds that row and updates it (what the client meant by "upsert")."""
    for attempt in range(1, UPSERT_ATTEMPTS + 1):
        try:
            with ctx.tx() as conn:
                result, fired = save_contact(conn, ctx.runtime, data)
                audit(conn, ctx, caller, action, "contact", result.contact.id, created=result.created,
                      changed_fields=result.changed_fields)  # fmt: skip
            break
        except DuplicateKeyError:
            if attempt == UPSERT_ATTEMPTS:
                raise
    if fired.transactionids:
        ctx.wake()
    return UpsertOut(
        contact=result.contact,
        created=result.created,
        changed=result.changed,
        changed_fields=result.changed_fields,
        transactionids=[str(t) for t in fired.transactionids],
    )


@router.post("/lists/{list_id}/contacts", responses={201: {"model": UpsertOut, "description": "Created"}})
def upsert_contact(
    list_id: Id, body: imports.ContactRow, ctx: Ctx, caller: Editor, response: Response
) -> UpsertOut:
    """Create the contact, or update the one with this email (any case) in the list."""
    with ctx.tx() as conn:
        own_list(conn, caller, list_id)
    out = _save(ctx, caller, body.to_input(list_id), "contact.upsert")
    response.status_code = 201 if out.created else 200
    return out


@router.get("/lists/{list_id}/contacts")
def list_contacts(
    list_id: Id,
    ctx: Ctx,
    caller: Viewer,
    email: str | None = Query(default=None, max_length=320, description="exact email, any case"),
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[svc.ContactOut]:
    t = contacts_table.c
    with ctx.tx() as conn:
        own_list(conn, caller, list_id)
        query = (
            sa.select(t.id).where(t.list_id == list_id, after(t.id, cursor)).order_by(t.id).limit(limit + 1)
        )
        if email is not None:
            query = query.where(t.email_key == email.strip().lower())
        ids = list(conn.execute(query).scalars())
        n, nxt = cut(ids, limit)
        return Page(items=[svc.get_contact(conn, i) for i in ids[:n]], next_cursor=nxt)


class Entry(BaseModel):
    automation_id: int
    entered_at: datetime


class ContactDetail(svc.ContactOut):
    entries: list[Entry] = Field(description="when the contact entered each automation, oldest first")


@router.get("/contacts/{contact_id}")
def get_contact(contact_id: Id, ctx: Ctx, caller: Viewer) -> ContactDetail:
    """The contact, its field values, lead status and the automations it went through."""
    with ctx.tx() as conn:
        own_contact(conn, caller, contact_id)
        contact = svc.get_contact(conn, contact_id)
        entered = entries_by_automation(conn, contact_id)
    entries = sorted(
        (Entry(automation_id=a, entered_at=at) for a, times in entered.items() for at in times),
        key=lambda e: (e.entered_at, e.automation_id),
    )
    return ContactDetail(**contact.model_dump(), entries=entries)


class ActivityOut(BaseModel):
    id: int
    kind: str = Field(
        description="campaign_open, link_click, page_visit, goal, automation, webhook, lead_score"
    )
    ref_id: int | None = Field(description="campaign, goal, automation, webhook or score id, by kind")
    name: str
    url: str
    value: int | None = Field(description="lead-score change")
    occurred_at: datetime
    delivery_id: int | None = Field(
        description="webhook: the platform's own delivery this records (its sync, delivered at "
        "occurred_at; ref_id is its action); null for events posted to /api/events"
    )


ActivityKind = Literal[
    "campaign_open", "link_click", "page_visit", "goal", "automation", "webhook", "lead_score"
]


@router.get("/contacts/{contact_id}/activity")
def contact_activity(
    contact_id: Id,
    ctx: Ctx,
    caller: Viewer,
    kind: ActivityKind | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[ActivityOut]:
    """The contact's marketing activity, newest first; ``kind`` narrows it to one kind."""
    a = activities.c
    query = (
        sa.select(a.id, a.kind, a.ref_id, a.name, a.url, a.value, a.occurred_at, a.delivery_id)
        .where(a.contact_id == contact_id, after(a.id, cursor, descending=True))
        .order_by(a.id.desc())
        .limit(limit + 1)
    )
    if kind is not None:
        query = query.where(a.kind == kind)
    with ctx.tx() as conn:
        own_contact(conn, caller, contact_id)
        rows = conn.execute(query).all()
    n, nxt = cut([r.id for r in rows], limit)
    return Page(items=[ActivityOut.model_validate(r._asdict()) for r in rows[:n]], next_cursor=nxt)


@router.patch("/contacts/{contact_id}")
def patch_contact(contact_id: Id, body: ContactPatch, ctx: Ctx, caller: Editor) -> UpsertOut:
    with ctx.tx() as conn:
        own_contact(conn, caller, contact_id)
        current = svc.get_contact(conn, contact_id)
    data = svc.ContactIn(list_id=current.list_id, email=current.email, **body.model_dump())
    return _save(ctx, caller, data, "contact.update")


@router.delete("/contacts/{contact_id}", status_code=204)
def delete_contact(contact_id: Id, ctx: Ctx, caller: Editor) -> Response:
    with ctx.tx() as conn:
        own_contact(conn, caller, contact_id)
        svc.delete_contact(conn, contact_id)
        audit(conn, ctx, caller, "contact.delete", "contact", contact_id)
    return Response(status_code=204)


_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


@router.post("/lists/{list_id}/contacts/import", openapi_extra=_IMPORT_BODY)
async def import_contacts(list_id: Id, request: Request, ctx: Ctx, caller: Editor) -> imports.ImportResult:
    """Upsert many contacts from CSV (header row, ``email`` column) or NDJSON; all rows or none."""
    body = await request.body()
    return await run_in_threadpool(
        _import, ctx, caller, list_id, body, request.headers.get("content-type", "")
    )


def _import(
    ctx: ApiContext, caller: Principal, list_id: int, body: bytes, content_type: str
) -> imports.ImportResult:
    rows = imports.parse(body, content_type)
    with ctx.tx() as conn:
        own_list(conn, caller, list_id)
        result = imports.store(conn, ctx.runtime, list_id, rows)
        audit(conn, ctx, caller, "contact.import", "list", list_id, **result.model_dump())
    if result.deliveries:
        ctx.wake()
    return result
