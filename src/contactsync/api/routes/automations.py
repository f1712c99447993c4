"""Automations and their Sync Contact actions: CRUD, secret rotation, recover since T."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contactsync.api.deps import (
    Ctx,
    Editor,
    Id,
    Owner,
    Viewer,
    account_lists,
    audit,
    own_action,
    own_automation,
    own_list,
)
from contactsync.api.errors import ERROR_RESPONSES
from contactsync.api.pagination import Cursor, Limit, Page, after, cut
from contactsync.api.routing import UtcRoute
from contactsync.automation import actions as action_svc
from contactsync.automation import automations as svc
from contactsync.automation.action_settings import SyncActionSettings
from contactsync.db.platform import automations as automations_table
from contactsync.delivery import interventions

CANCELLED_HEADER = "Cancelled-Deliveries"

router = APIRouter(tags=["automations"], responses=ERROR_RESPONSES, route_class=UtcRoute)


@router.post("/automations", status_code=201)
def create_automation(body: svc.AutomationIn, ctx: Ctx, caller: Editor) -> svc.AutomationOut:
    with ctx.tx() as conn:
        own_list(conn, caller, body.list_id)
        made = svc.create_automation(conn, ctx.runtime, body)
        audit(conn, ctx, caller, "automation.create", "automation", made.id, name=made.name)
        return made


@router.get("/automations")
def list_automations(
    ctx: Ctx,
    caller: Viewer,
    list_id: int | None = Query(default=None, ge=1, le=2**63 - 1),
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[svc.AutomationOut]:
    t = automations_table.c
    query = (
        sa.select(automations_table)
        .where(t.list_id.in_(account_lists(caller.account_id)), after(t.id, cursor))
        .order_by(t.id)
        .limit(limit + 1)
    )
    if list_id is not None:
        query = query.where(t.list_id == list_id)
    with ctx.tx() as conn:
        rows = conn.execute(query).all()
    n, nxt = cut([r.id for r in rows], limit)
    return Page(items=[svc.automation_from_row(r) for r in rows[:n]], next_cursor=nxt)


@router.get("/automations/{automation_id}")
def get_automation(automation_id: Id, ctx: Ctx, caller: Viewer) -> svc.AutomationOut:
    with ctx.tx() as conn:
        own_automation(conn, caller, automation_id)
        return svc.get_automation(conn, automation_id)


@router.put("/automations/{automation_id}")
def update_automation(
    automation_id: Id, body: svc.AutomationIn, ctx: Ctx, caller: Editor
) -> svc.AutomationOut:
    with ctx.tx() as conn:
        own_automation(conn, caller, automation_id)
        updated = svc.update_automation(conn, ctx.runtime, automation_id, body)
        audit(conn, ctx, caller, "automation.update", "automation", automation_id, name=updated.name)
        return updated


@router.delete("/automations/{automation_id}", status_code=204)
def delete_automation(automation_id: Id, ctx: Ctx, caller: Editor) -> Response:
    """Delete with its actions; their pending deliveries are cancelled (``Cancelled-Deliveries``)."""
    with ctx.tx() as conn:
        own_automation(conn, caller, automation_id)
        cancelled = svc.delete_automation(conn, automation_id, now=ctx.runtime.clock())
        audit(conn, ctx, caller, "automation.delete", "automation", automation_id, cancelled=cancelled)
    return Response(status_code=204, headers={CANCELLED_HEADER: str(cancelled)})


# --- actions ---------------------------------------------------------------------------------------


@router.post("/automations/{automation_id}/actions", status_code=201, tags=["actions"])
def create_action(
    automation_id: Id, body: SyncActionSettings, ctx: Ctx, caller: Editor
) -> action_svc.ActionOut:
    """Validate (template with line/column, scheme, sections, headers) and store; a secret is generated.

    The secret and header values are sealed at rest: reads show masked hints (``POST .../reveal``
    shows them); sending a header's hint back unchanged keeps its value."""
    with ctx.tx() as conn:
        own_automation(conn, caller, automation_id)
        made = action_svc.create_action(conn, ctx.runtime, automation_id=automation_id, settings=body)
        audit(conn, ctx, caller, "action.create", "action", made.id, automation_id=automation_id)
        return action_svc.shown(made, ctx.runtime.keyring)


@router.get("/automations/{automation_id}/actions", tags=["actions"])
def list_actions(automation_id: Id, ctx: Ctx, caller: Viewer) -> list[action_svc.ActionOut]:
    with ctx.tx() as conn:
        own_automation(conn, caller, automation_id)
        return [
            action_svc.shown(a, ctx.runtime.keyring) for a in action_svc.list_actions(conn, automation_id)
        ]


@router.get("/actions/{action_id}", tags=["actions"])
def get_action(action_id: Id, ctx: Ctx, caller: Viewer) -> action_svc.ActionOut:
    with ctx.tx() as conn:
        own_action(conn, caller, action_id)
        return action_svc.shown(action_svc.get_action(conn, action_id), ctx.runtime.keyring)


@router.put("/actions/{action_id}", tags=["actions"])
def update_action(action_id: Id, body: SyncActionSettings, ctx: Ctx, caller: Editor) -> action_svc.ActionOut:
    with ctx.tx() as conn:
        own_action(conn, caller, action_id)
        updated = action_svc.update_action(conn, ctx.runtime, action_id, body)
        audit(conn, ctx, caller, "action.update", "action", action_id)
        return action_svc.shown(updated, ctx.runtime.keyring)


@router.delete("/actions/{action_id}", status_code=204, tags=["actions"])
def delete_action(action_id: Id, ctx: Ctx, caller: Editor) -> Response:
    """Delete the action; its pending deliveries are cancelled (they could not be signed any more),
    how many is in the ``Cancelled-Deliveries`` header."""
    with ctx.tx() as conn:
        own_action(conn, caller, action_id)
        cancelled = action_svc.delete_action(conn, action_id, now=ctx.runtime.clock())
        audit(conn, ctx, caller, "action.delete", "action", action_id, cancelled=cancelled)
    return Response(status_code=204, headers={CANCELLED_HEADER: str(cancelled)})


@router.post("/actions/{action_id}/rotate-secret", tags=["actions"])
def rotate_secret(action_id: Id, ctx: Ctx, caller: Editor) -> action_svc.ActionOut:
    """A new secret now; the previous one keeps signing alongside for 24 hours."""
    with ctx.tx() as conn:
        own_action(conn, caller, action_id)
        rotated = action_svc.rotate_secret(conn, ctx.runtime, action_id)
        audit(conn, ctx, caller, "action.rotate_secret", "action", action_id)
        return action_svc.shown(rotated, ctx.runtime.keyring)


@router.post("/actions/{action_id}/reveal", tags=["actions"])
def reveal(action_id: Id, ctx: Ctx, caller: Owner) -> action_svc.Revealed:
    """The signing secret(s) and header values in clear (owners; audited); every other read shows
    masked hints."""
    with ctx.tx() as conn:
        own_action(conn, caller, action_id)
        revealed = action_svc.reveal(conn, ctx.runtime.keyring, action_id, now=ctx.runtime.clock())
        audit(conn, ctx, caller, "action.reveal", "action", action_id)
        return revealed


class RecoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime = Field(description="retry failed deliveries created at or after this instant")


class RecoverOut(BaseModel):
    requeued: int


@router.post("/actions/{action_id}/recover", tags=["actions", "deliveries"])
def recover(action_id: Id, body: RecoverIn, ctx: Ctx, caller: Editor) -> RecoverOut:
    """Retry every failed delivery of this action created since ``since``, with a fresh schedule."""
    since = body.since.astimezone(UTC).replace(tzinfo=None)
    with ctx.tx() as conn:
        own_action(conn, caller, action_id)
        count = interventions.recover_since(
            conn, action_id=action_id, since=_clamp(since), now=ctx.runtime.clock()
        )
        audit(conn, ctx, caller, "action.recover", "action", action_id, requeued=count, since=str(since))
    if count:
        ctx.wake()
    return RecoverOut(requeued=count)


def _clamp(when: datetime) -> datetime:
    return max(when, datetime(1970, 1, 1))
