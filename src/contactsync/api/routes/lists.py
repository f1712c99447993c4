"""Lists, their custom fields, and the account's lead-status thresholds."""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from contactsync.api.deps import Ctx, Editor, Id, Viewer, audit, own_list
from contactsync.api.errors import ERROR_RESPONSES
from contactsync.api.pagination import Cursor, Limit, Page, after, cut
from contactsync.api.routing import UtcRoute
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
