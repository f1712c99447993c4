"""Lists, their custom fields, and the account's lead-status thresholds: create, read, rename, delete.

Deleting a list or a field that something still uses answers 409 naming every user; changing a
field's shortcode key while URL templates use it needs ``update_templates`` (they change with it).
"""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from contactsync.api.deps import Ctx, Editor, Id, Viewer, audit, own_field, own_list
from contactsync.api.errors import ERROR_RESPONSES
from contactsync.api.pagination import Cursor, Limit, Page, after, cut
from contactsync.api.routing import UtcRoute
from contactsync.automation import editing
from contactsync.automation import lists as svc
from contactsync.db.platform import lists as lists_table

router = APIRouter(tags=["lists"], responses=ERROR_RESPONSES, route_class=UtcRoute)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ListCreate(_In):
    name: str = Field(min_length=1, max_length=200)


class FieldCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    type: Literal["text", "number", "date", "email", "phone", "choice"] = "text"
    shortcode_key: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=200)
    choices: list[str] = Field(default_factory=list, max_length=1000)


class ListPatch(_In):
    name: str = Field(min_length=1, max_length=200)


class FieldPatch(_In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    shortcode_key: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=200)
    choices: list[str] | None = Field(default=None, max_length=1000)
    update_templates: bool = Field(
        default=False, description="with a new shortcode_key: rewrite the URL templates that use the old one"
    )


class ThresholdsBody(_In):
    thresholds: list[svc.Threshold] = Field(min_length=1, max_length=100)


@router.post("/lists", status_code=201)
def create_list(body: ListCreate, ctx: Ctx, caller: Editor) -> svc.ListOut:
    with ctx.tx() as conn:
        data = svc.ListIn(account_id=caller.account_id, name=body.name)
        made = svc.create_list(conn, data, now=ctx.runtime.clock())
        audit(conn, ctx, caller, "list.create", "list", made.id, name=made.name)
        return made


@router.get("/lists")
def list_lists(ctx: Ctx, caller: Viewer, cursor: Cursor = None, limit: Limit = 50) -> Page[svc.ListOut]:
    t = lists_table.c
    with ctx.tx() as conn:
        rows = conn.execute(
            sa.select(lists_table)
            .where(t.account_id == caller.account_id, after(t.id, cursor))
            .order_by(t.id)
            .limit(limit + 1)
        ).all()
    n, nxt = cut([r.id for r in rows], limit)
    return Page(items=[svc.ListOut.model_validate(r._asdict()) for r in rows[:n]], next_cursor=nxt)


@router.get("/lists/{list_id}")
def get_list(list_id: Id, ctx: Ctx, caller: Viewer) -> svc.ListOut:
    with ctx.tx() as conn:
        own_list(conn, caller, list_id)
        return svc.get_list(conn, list_id)


@router.patch("/lists/{list_id}")
def rename_list(list_id: Id, body: ListPatch, ctx: Ctx, caller: Editor) -> svc.ListOut:
    with ctx.tx() as conn:
        own_list(conn, caller, list_id)
        renamed = editing.rename_list(conn, list_id, body.name)
        audit(conn, ctx, caller, "list.rename", "list", list_id, name=body.name)
        return renamed


@router.delete("/lists/{list_id}")
def delete_list(list_id: Id, ctx: Ctx, caller: Editor) -> svc.ListOut:
    """Delete the list with its fields and contacts (409 while automations run on it)."""
    with ctx.tx() as conn:
        own_list(conn, caller, list_id)
        gone = editing.delete_list(conn, list_id)
        audit(conn, ctx, caller, "list.delete", "list", list_id, name=gone.name)
        return gone


@router.post("/lists/{list_id}/fields", status_code=201)
def create_field(list_id: Id, body: FieldCreate, ctx: Ctx, caller: Editor) -> svc.FieldOut:
    with ctx.tx() as conn:
        own_list(conn, caller, list_id)
        data = svc.FieldIn(list_id=list_id, **body.model_dump())
        made = svc.create_field(conn, data, now=ctx.runtime.clock())
        audit(conn, ctx, caller, "field.create", "field", made.id, list_id=list_id, name=made.name)
        return made


@router.get("/lists/{list_id}/fields")
def list_fields(list_id: Id, ctx: Ctx, caller: Viewer) -> list[svc.FieldOut]:
    with ctx.tx() as conn:
        own_list(conn, caller, list_id)
        return svc.list_fields(conn, list_id)


@router.patch("/fields/{field_id}")
def update_field(field_id: Id, body: FieldPatch, ctx: Ctx, caller: Editor) -> editing.FieldChanged:
    """Rename, change choices or the shortcode key (409 naming the templates that use the old key,
    unless ``update_templates``)."""
    with ctx.tx() as conn:
        own_field(conn, caller, field_id)
        changed = editing.update_field(
            conn,
            field_id,
            name=body.name,
            shortcode_key=body.shortcode_key,
            choices=body.choices,
            update_templates=body.update_templates,
            now=ctx.runtime.clock(),
        )
        detail = body.model_dump(exclude_none=True) | {"updated_actions": changed.updated_actions}
        audit(conn, ctx, caller, "field.update", "field", field_id, **detail)
        return changed


@router.delete("/fields/{field_id}")
def delete_field(field_id: Id, ctx: Ctx, caller: Editor) -> svc.FieldOut:
    """Delete the field and its values (409 naming every condition, trigger or template using it)."""
    with ctx.tx() as conn:
        own_field(conn, caller, field_id)
        gone = editing.delete_field(conn, field_id)
        audit(conn, ctx, caller, "field.delete", "field", field_id, name=gone.name)
        return gone


class ThresholdsOut(BaseModel):
    thresholds: list[svc.Threshold]


@router.get("/lead-status-thresholds")
def get_thresholds(ctx: Ctx, caller: Viewer) -> ThresholdsOut:
    with ctx.tx() as conn:
        found = svc.get_thresholds(conn, caller.account_id)
    return ThresholdsOut(thresholds=[svc.Threshold(min_score=m, label=label) for m, label in found])


@router.put("/lead-status-thresholds")
def set_thresholds(body: ThresholdsBody, ctx: Ctx, caller: Editor) -> ThresholdsOut:
    with ctx.tx() as conn:
        found = svc.set_thresholds(conn, caller.account_id, body.thresholds)
        audit(conn, ctx, caller, "lead_status.update", "account", caller.account_id, thresholds=len(found))
    return ThresholdsOut(thresholds=[svc.Threshold(min_score=m, label=label) for m, label in found])
