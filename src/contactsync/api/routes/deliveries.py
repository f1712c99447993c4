"""Deliveries (the outbox as the owner sees it) and endpoints (health, enable/disable).

State changes go through :mod:`contactsync.delivery.outbox` and
:mod:`contactsync.delivery.endpoints`; this module only reads rows and translates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from contactsync.api.deps import (
    ApiContext,
    Ctx,
    Editor,
    Id,
    Viewer,
    audit,
    delivery_owned,
    endpoint_owned,
    own_delivery,
    own_endpoint,
)
from contactsync.api.errors import ERROR_RESPONSES, ApiError
from contactsync.api.pagination import Cursor, Limit, Page, after, cut
from contactsync.api.routing import UtcRoute
from contactsync.db.counting import CAP
from contactsync.db.platform import deliveries, delivery_attempts, endpoint_events, endpoints
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery import interventions, outbox
from contactsync.delivery.endpoints import EndpointKey

router = APIRouter(responses=ERROR_RESPONSES, route_class=UtcRoute)

State = Literal["pending", "in_flight", "delivered", "failed", "cancelled"]
MAX_ID = 2**63 - 1


def _text(data: bytes | None) -> str:
    return bytes(data or b"").decode("utf-8", errors="replace")


class DeliveryOut(BaseModel):
    id: int
    transactionid: str
    action_id: int | None
    automation_id: int | None
    contact_id: int | None
    endpoint: str
    method: str
    url: str
    state: State
    attempt_count: int
    next_attempt_at: datetime
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None
    render_pending: bool = Field(
        description="waiting for its delay to end, when URL and body are rendered from the contact's data "
        "as it is then (the action's render: at_send); until then they show the request as at the trigger"
    )
    render_note: str | None = Field(
        description="what rendering when the delay ended did, or why the request as at the trigger was kept"
    )

    @classmethod
    def of(cls, row: Any) -> DeliveryOut:
        m = row._mapping
        return cls.model_validate(
            {
                **{k: m[k] for k in cls.model_fields if k in m},
                "transactionid": str(m["transactionid"]),
                "render_pending": bool(m["render_pending"]),
            }
        )


class AttemptOut(BaseModel):
    number: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    outcome: str
    error: str | None
    response_headers: dict[str, str]
    response_body: str = Field(description="first 20 KB of the response, decoded as UTF-8 (lossy)")


class DeliveryDetail(DeliveryOut):
    headers: dict[str, str] = Field(
        description="static headers of the frozen request (signature added per attempt); values are "
        "credentials sealed at rest, shown as masked hints (the action's reveal shows them)"
    )
    content_type: str
    body: str
    attempts: list[AttemptOut]


@router.get("/deliveries", tags=["deliveries"])
def list_deliveries(
    ctx: Ctx,
    caller: Viewer,
    state: State | None = None,
    action_id: int | None = Query(default=None, ge=1, le=MAX_ID),
    automation_id: int | None = Query(default=None, ge=1, le=MAX_ID),
    contact_id: int | None = Query(default=None, ge=1, le=MAX_ID),
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[DeliveryOut]:
    """Newest first; filter by state, action, automation or contact."""
    d = deliveries.c
    query = (
        sa.select(*(c for c in deliveries.c if c.name not in {"body", "headers"}))
        .where(delivery_owned(caller.account_id), after(d.id, cursor, descending=True))
        .order_by(d.id.desc())
        .limit(limit + 1)
    )
    for column, value in (
        (d.state, state),
        (d.action_id, action_id),
        (d.automation_id, automation_id),
        (d.contact_id, contact_id),
    ):
        if value is not None:
            query = query.where(column == value)
    with ctx.tx() as conn:
        rows = conn.execute(query).all()
    n, nxt = cut([r.id for r in rows], limit)
    return Page(items=[DeliveryOut.of(r) for r in rows[:n]], next_cursor=nxt)


@router.get("/deliveries/{delivery_id}", tags=["deliveries"])
def get_delivery(delivery_id: Id, ctx: Ctx, caller: Viewer) -> DeliveryDetail:
    """The frozen request and every attempt with its response."""
    with ctx.tx() as conn:
        own_delivery(conn, caller, delivery_id)
        return _detail(conn, delivery_id, ctx)


def _detail(conn: sa.Connection, delivery_id: int, ctx: ApiContext) -> DeliveryDetail:
    row = conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id)).one()
    a = delivery_attempts.c
    attempts = [
        AttemptOut(
            number=r.number,
            started_at=r.started_at,
            duration_ms=r.duration_ms,
            status_code=r.status_code,
            outcome=r.outcome,
            error=r.error,
            response_headers={str(k): str(v) for k, v in (r.response_headers or {}).items()},
            response_body=_text(r.response_body),
        )
        for r in conn.execute(
            sa.select(delivery_attempts).where(a.delivery_id == delivery_id).order_by(a.number)
        )
    ]
    base = DeliveryOut.of(row)
    return DeliveryDetail(
        **base.model_dump(),
        headers={str(k): ctx.runtime.keyring.hint(str(v)) for k, v in (row.headers or {}).items()},
        content_type=row.content_type,
        body=_text(row.body),
        attempts=attempts,
    )


@router.post("/deliveries/{delivery_id}/retry", tags=["deliveries"])
def retry_delivery(delivery_id: Id, ctx: Ctx, caller: Editor) -> DeliveryDetail:
    """Send a failed, cancelled or delivered delivery again now (same transactionid and body), or
    try a retrying one (pending after failed attempts) now rather than at its next attempt time."""
    with ctx.tx() as conn:
        own_delivery(conn, caller, delivery_id)
        if not interventions.replay(conn, [delivery_id], now=ctx.runtime.clock()):
            state = conn.execute(sa.select(deliveries.c.state).where(deliveries.c.id == delivery_id)).scalar()
            raise ApiError(
                409,
                "conflict",
                f"a {state} delivery cannot be retried: it is being sent or has not been tried yet",
            )
        audit(conn, ctx, caller, "delivery.retry", "delivery", delivery_id)
        detail = _detail(conn, delivery_id, ctx)
    ctx.wake()
    return detail


@router.post("/deliveries/{delivery_id}/cancel", tags=["deliveries"])
def cancel_delivery(delivery_id: Id, ctx: Ctx, caller: Editor) -> DeliveryDetail:
    """Stop a pending or failed delivery for good."""
    with ctx.tx() as conn:
        own_delivery(conn, caller, delivery_id)
        if not interventions.cancel(conn, [delivery_id], now=ctx.runtime.clock()):
            state = conn.execute(sa.select(deliveries.c.state).where(deliveries.c.id == delivery_id)).scalar()
            raise ApiError(409, "conflict", f"a {state} delivery cannot be cancelled")
        audit(conn, ctx, caller, "delivery.cancel", "delivery", delivery_id)
        return _detail(conn, delivery_id, ctx)


# --- endpoints -------------------------------------------------------------------------------------


class EndpointOut(BaseModel):
    id: int
    endpoint: str = Field(description="scheme://host:port")
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    edited_at: datetime | None
    max_in_flight: int
    rate_limit_per_s: float | None
    waiting: int = Field(
        description=f"deliveries pending or in flight to this endpoint, counted up to {CAP:,} "
        f"({CAP + 1}: more)"
    )


class EndpointEventOut(BaseModel):
    kind: str = Field(description="disabled, auto_disabled, gone, enabled")
    message: str
    created_at: datetime


class EndpointDetail(EndpointOut):
    events: list[EndpointEventOut] = Field(
        description="the owner's notifications about it, newest first (20)"
    )


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_in_flight: int = Field(
        ge=1, le=1000, description="requests in flight at once (per dispatcher process)"
    )
    rate_limit_per_s: float | None = Field(
        default=None, gt=0, le=100_000, description="requests per second at most; null: no rate limit"
    )


class DisableIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="disabled by the owner", min_length=1, max_length=500)


def _endpoints(conn: sa.Connection, where: sa.ColumnElement[bool]) -> list[EndpointOut]:
    rows = conn.execute(sa.select(endpoints).where(where).order_by(endpoints.c.id)).all()
    return [
        EndpointOut.model_validate(
            {
                **r._asdict(),
                "enabled": r.disabled_at is None,
                "waiting": int(endpoint_rows.waiting(conn, EndpointKey(r.account_id, r.endpoint))),
            }
        )
        for r in rows
    ]


@router.get("/endpoints", tags=["endpoints"])
def list_endpoints(ctx: Ctx, caller: Viewer) -> list[EndpointOut]:
    """Health of the account's endpoints (its own: another account's failures never show here)."""
    with ctx.tx() as conn:
        return _endpoints(conn, endpoint_owned(caller.account_id))


@router.get("/endpoints/{endpoint_id}", tags=["endpoints"])
def get_endpoint(endpoint_id: Id, ctx: Ctx, caller: Viewer) -> EndpointDetail:
    """Health, waiting deliveries and the latest disable/enable notifications."""
    with ctx.tx() as conn:
        name = own_endpoint(conn, caller, endpoint_id)
        base = _endpoints(conn, endpoints.c.id == endpoint_id)[0]
        e = endpoint_events.c
        rows = conn.execute(
            sa.select(e.kind, e.message, e.created_at)
            .where(e.account_id == caller.account_id, e.endpoint == name)
            .order_by(e.created_at.desc(), e.id.desc())
            .limit(20)
        )
        return EndpointDetail(**base.model_dump(), events=[EndpointEventOut(**r._asdict()) for r in rows])


@router.put("/endpoints/{endpoint_id}/limits", tags=["endpoints"])
def set_limits(endpoint_id: Id, body: LimitsIn, ctx: Ctx, caller: Editor) -> EndpointOut:
    """How hard deliveries may press this endpoint: in-flight cap and rate limit (per dispatcher
    process; dispatchers pick a change up within 30 s)."""
    with ctx.tx() as conn:
        key = EndpointKey(caller.account_id, own_endpoint(conn, caller, endpoint_id))
        endpoint_rows.set_limits(conn, key, **body.model_dump(), now=ctx.runtime.clock())
        audit(conn, ctx, caller, "endpoint.limits", "endpoint", endpoint_id, **body.model_dump())
        return _endpoints(conn, endpoints.c.id == endpoint_id)[0]


@router.post("/endpoints/{endpoint_id}/disable", tags=["endpoints"])
def disable_endpoint(endpoint_id: Id, ctx: Ctx, caller: Editor, body: DisableIn | None = None) -> EndpointOut:
    """Hold deliveries to this endpoint (they wait, nothing is dropped)."""
    reason = (body or DisableIn()).reason
    with ctx.tx() as conn:
        key = EndpointKey(caller.account_id, own_endpoint(conn, caller, endpoint_id))
        endpoint_rows.disable(conn, key, reason=reason, now=ctx.runtime.clock(), kind="disabled")
        audit(conn, ctx, caller, "endpoint.disable", "endpoint", endpoint_id, reason=reason)
        return _endpoints(conn, endpoints.c.id == endpoint_id)[0]


@router.post("/endpoints/{endpoint_id}/enable", tags=["endpoints"])
def enable_endpoint(endpoint_id: Id, ctx: Ctx, caller: Editor) -> EndpointOut:
    """Resume deliveries to this endpoint; its failure streak starts afresh."""
    with ctx.tx() as conn:
        key = EndpointKey(caller.account_id, own_endpoint(conn, caller, endpoint_id))
        if endpoint_rows.enable(conn, key, now=ctx.runtime.clock()):
            outbox.notify(conn)
        audit(conn, ctx, caller, "endpoint.enable", "endpoint", endpoint_id)
        out = _endpoints(conn, endpoints.c.id == endpoint_id)[0]
    ctx.wake()
    return out
