"""Preview, test send, explain, dry run and manual runs: what an owner does before and after switching an
automation on, and to find out why a contact did or did not sync.

A manual run is started in the request and processed in a background thread of this process
(:mod:`contactsync.api.background`); its progress is read from the run row. A run left ``running``
by a stopped server resumes after its last committed chunk when the app starts again, or when its
progress is read or a start of it is refused (409: one run per automation at a time).
"""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, computed_field
from starlette.concurrency import run_in_threadpool

from contactsync.api.deps import (
    MAX_ID,
    ApiContext,
    Ctx,
    Editor,
    Id,
    Viewer,
    audit,
    own_action,
    own_automation,
    own_contact,
)
from contactsync.api.errors import ERROR_RESPONSES
from contactsync.api.routing import UtcRoute
from contactsync.automation import explain, manual
from contactsync.automation.action_settings import SyncActionSettings
from contactsync.automation.preview import Preview, preview
from contactsync.automation.trial_send import Prepared, prepare_test, send_test
from contactsync.db.platform import manual_runs
from contactsync.delivery.hints import ACTION_PAGE
from contactsync.delivery.netguard import NetPolicy
from contactsync.errors import NotFoundError, RunInProgressError
from contactsync.tenancy.keys import Principal

router = APIRouter(responses=ERROR_RESPONSES, route_class=UtcRoute)


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: int = Field(ge=1, le=MAX_ID)
    settings: SyncActionSettings | None = Field(default=None, description="preview unsaved settings instead")


@router.post("/actions/{action_id}/preview", tags=["actions"])
def preview_action(action_id: Id, body: PreviewIn, ctx: Ctx, caller: Viewer) -> Preview:
    """The exact request the action would send for the contact now, its size, PHP counts and warnings."""
    with ctx.tx() as conn:
        own_action(conn, caller, action_id)
        own_contact(conn, caller, body.contact_id)
        return preview(conn, ctx.runtime, action_id, body.contact_id, settings=body.settings)


class TestSendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: int = Field(ge=1, le=MAX_ID)


class TestResponse(BaseModel):
    status: int | None
    outcome: str = Field(
        description="success, http_3xx, http_4xx, gone, http_5xx, or the error kind (timeout, blocked, …)"
    )
    headers: dict[str, str]
    body: str = Field(description="first 20 KB of the response body (UTF-8, lossy)")
    duration_ms: float
    error: str
    hint: str = Field(description="what the outcome means and what to do, in words (delivery/hints.py)")


class TestSendOut(BaseModel):
    request: Preview
    response: TestResponse


@router.post("/actions/{action_id}/test-send", tags=["actions"])
async def test_send(action_id: Id, body: TestSendIn, ctx: Ctx, caller: Editor) -> TestSendOut:
    """One real, signed attempt now, through the dispatcher's network guard; nothing is queued or retried."""
    prepared = await run_in_threadpool(_prepare, ctx, caller, action_id, body.contact_id)
    policy = NetPolicy(
        allow_private_networks=ctx.settings.allow_private_networks,
        allowed_cidrs=tuple(ctx.settings.allowed_cidrs),
    )
    sent = await send_test(prepared, policy=policy, panel=ACTION_PAGE)
    result = sent.result
    return TestSendOut(
        request=sent.request,
        response=TestResponse(
            status=result.status,
            outcome=sent.outcome,
            headers=dict(result.headers),
            body=sent.body,
            duration_ms=result.duration_s * 1000.0,
            error=result.detail,
            hint=sent.hint,
        ),
    )


def _prepare(ctx: ApiContext, caller: Principal, action_id: int, contact_id: int) -> Prepared:
    with ctx.tx() as conn:
        own_action(conn, caller, action_id)
        own_contact(conn, caller, contact_id)
        audit(conn, ctx, caller, "action.test_send", "action", action_id, contact_id=contact_id)
        return prepare_test(conn, ctx.runtime, action_id, contact_id)


# --- manual runs -----------------------------------------------------------------------------------


class RunOut(manual.ManualRunOut):
    @computed_field  # type: ignore[prop-decorator]
    @property
    def progress(self) -> float:
        """Fraction of the list scanned, 0 to 1."""
        return super().progress


def _out(run: manual.ManualRunOut) -> RunOut:
    return RunOut.model_validate(run.model_dump())


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ignore_reentry: bool = Field(
        default=False,
        description="a resend on purpose: every contact that matches enters, even one a `once` "
        "automation already let in (check the count with GET .../dry-run?ignore_reentry=true first)",
    )


@router.post("/automations/{automation_id}/runs", status_code=202, tags=["runs"])
def start_run(automation_id: Id, ctx: Ctx, caller: Editor, body: RunIn | None = None) -> RunOut:
    """Run the automation over every contact of its list that matches now.

    One run per automation at a time: while one is running, this answers 409 naming it (and makes
    sure it is being worked on, should the server that started it have stopped).
    """
    force = body is not None and body.ignore_reentry
    try:
        with ctx.tx() as conn:
            own_automation(conn, caller, automation_id)
            run = manual.start_run(conn, ctx.runtime, automation_id, ignore_reentry=force)
            action = "run.resend" if force else "run.start"
            audit(conn, ctx, caller, action, "run", run.id, automation_id=automation_id)
    except RunInProgressError as exc:
        ctx.runs.ensure(exc.run_id)
        raise
    ctx.runs.ensure(run.id)
    return _out(run)


@router.get("/automations/{automation_id}/dry-run", tags=["runs"])
def dry_run(automation_id: Id, ctx: Ctx, caller: Viewer, ignore_reentry: bool = False) -> explain.DryRun:
    """What a manual run would do now: contacts matching, those re-entry lets in, a sample. Nothing
    is entered or sent."""
    with ctx.tx() as conn:
        own_automation(conn, caller, automation_id)
        return explain.dry_run(conn, ctx.runtime, automation_id, ignore_reentry=ignore_reentry)


@router.get("/automations/{automation_id}/explain", tags=["runs"])
def explain_contact(
    automation_id: Id, ctx: Ctx, caller: Viewer, contact_id: int = Query(ge=1, le=MAX_ID)
) -> explain.Explanation:
    """Why the contact did or did not sync: every condition with the contact's value and result, the
    re-entry gate, the actions' delays and the deliveries made so far."""
    with ctx.tx() as conn:
        own_automation(conn, caller, automation_id)
        own_contact(conn, caller, contact_id)
        return explain.explain(conn, ctx.runtime, automation_id, contact_id)


@router.get("/automations/{automation_id}/runs", tags=["runs"])
def list_runs(automation_id: Id, ctx: Ctx, caller: Viewer) -> list[RunOut]:
    with ctx.tx() as conn:
        own_automation(conn, caller, automation_id)
        return [_out(r) for r in manual.list_runs(conn, automation_id)]


def _own_run(conn: sa.Connection, caller: Principal, run_id: int) -> None:
    mine = conn.execute(
        sa.select(manual_runs.c.id).where(
            manual_runs.c.id == run_id,
            manual_runs.c.account_id == caller.account_id,
        )
    ).first()
    if mine is None:
        raise NotFoundError(f"manual run {run_id} does not exist", field="run_id")


@router.get("/runs/{run_id}", tags=["runs"])
def get_run(run_id: Id, ctx: Ctx, caller: Viewer) -> RunOut:
    """Progress: contacts scanned of the list's total, matched, enqueued; state."""
    with ctx.tx() as conn:
        _own_run(conn, caller, run_id)
        run = manual.get_run(conn, run_id)
    if run.state == "running":
        ctx.runs.ensure(run.id)  # no-op while this process works on it; resumes an orphaned run
    return _out(run)


@router.post("/runs/{run_id}/cancel", tags=["runs"])
def cancel_run(run_id: Id, ctx: Ctx, caller: Editor) -> RunOut:
    """Stop after the current chunk; deliveries already queued stay queued."""
    with ctx.tx() as conn:
        _own_run(conn, caller, run_id)
        cancelled = manual.cancel_run(conn, ctx.runtime, run_id)
        audit(conn, ctx, caller, "run.cancel", "run", run_id)
        return _out(cancelled)
