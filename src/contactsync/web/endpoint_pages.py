"""Endpoints & settings: the account's endpoints with their health, holding and resuming deliveries to
one, its throttles (in-flight cap and rate limit), and the account's lead-status thresholds.

Changes go through the delivery and list services with the API's own input models (``LimitsIn``,
``ThresholdsBody``), so the UI accepts exactly what the API accepts; a refused form comes back with
the message beside it and what was typed kept. Re-enabling uses the dashboard's form
(``POST /endpoints/enable``), which comes back here when asked to.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.api.deps import own_endpoint
from contactsync.api.routes.deliveries import DisableIn, LimitsIn
from contactsync.api.routes.lists import ThresholdsBody
from contactsync.automation.lists import Threshold, get_thresholds, set_thresholds
from contactsync.db.platform import endpoints
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery.endpoints import EndpointKey
from contactsync.errors import ContactSyncError, ValidationError
from contactsync.web import stats
from contactsync.web.app import Web
from contactsync.web.forms import Problem, explain_error, small_int, typed_of
from contactsync.web.platform_pages import EDITOR, VIEWER, form_text, utcnow
from contactsync.web.security import Session

BLANK_THRESHOLD_ROWS = 3
"""Empty rows offered under the thresholds, to add levels."""


def account_endpoints(conn: sa.Connection, account_id: int) -> list[dict[str, Any]]:
    """The account's endpoints with their health and how many deliveries wait for each (counted up
    to a cap: a backlog is never read whole)."""
    e = endpoints.c
    rows = conn.execute(sa.select(endpoints).where(e.account_id == account_id).order_by(e.endpoint)).all()
    return [
        {**row._mapping, "waiting": endpoint_rows.waiting(conn, EndpointKey(account_id, row.endpoint))}
        for row in rows
    ]


def threshold_rows(form: Any) -> list[Threshold]:
    """The thresholds table as typed: rows left empty are dropped, a half-filled one is refused."""
    scores = [s.strip() if isinstance(s, str) else "" for s in form.getlist("min_score")]
    labels = [s.strip() if isinstance(s, str) else "" for s in form.getlist("label")]
    out = []
    for i, (score, label) in enumerate(zip(scores, labels, strict=False), start=1):
        if not score and not label:
            continue
        if not score or not label:
            raise ValidationError(f"row {i}: give both a minimum score and a label", field="thresholds")
        try:
            number = int(score)
        except ValueError:
            raise ValidationError(f"row {i}: {score!r} is not a whole number", field="thresholds") from None
        out.append(Threshold.model_validate({"min_score": number, "label": label}))
    return sorted(out, key=lambda t: t.min_score)


def limits_input(form: Any) -> LimitsIn:
    rate = form_text(form, "rate_limit_per_s")
    return LimitsIn.model_validate(
        {"max_in_flight": form_text(form, "max_in_flight"), "rate_limit_per_s": rate or None}
    )


def routes(web: Web) -> list[BaseRoute]:
    async def index(
        request: Request, session: Session, *, status: int = 200, problem: Problem | None = None
    ) -> Response:
        account_id = session.who.principal.account_id

        def load(conn: sa.Connection) -> dict[str, Any]:
            return {
                "rows": account_endpoints(conn, account_id),
                "thresholds": list(get_thresholds(conn, account_id)),
                "events": stats.endpoint_news(conn, account_id=account_id),
            }

        data = await web.read(load)
        typed = problem.typed if problem is not None and problem.at("thresholds") else None
        if typed is not None:  # the table as typed, row for row
            scores, labels = typed.get("min_score", []), typed.get("label", [])
            scores, labels = ([scores], [labels]) if isinstance(scores, str) else (scores, labels)
            table = list(zip(scores, labels, strict=False))
        else:
            table = [(str(m), label) for m, label in data["thresholds"]] + [("", "")] * BLANK_THRESHOLD_ROWS
        return web.render(
            request, session, "platform/endpoints.html", status, problem=problem, table=table, **data
        )

    async def show(request: Request, session: Session) -> Response:
        return await index(request, session)

    async def refused(
        request: Request, session: Session, form_id: str, exc: Exception, form: Any
    ) -> Response:
        field, message = explain_error(exc)
        problem = Problem(form_id, message, field, typed_of(form))
        return await index(request, session, status=422, problem=problem)

    def endpoint_of(form: Any) -> int:
        return small_int(form_text(form, "endpoint_id")) or 0

    async def disable(request: Request, session: Session) -> Response:
        form = await request.form()
        endpoint_id = endpoint_of(form)
        who = session.who
        await web.read(lambda conn: own_endpoint(conn, who.principal, endpoint_id))  # 404 first
        try:
            body = DisableIn.model_validate({"reason": form_text(form, "reason") or "disabled by the owner"})
        except PydanticValidationError as exc:
            return await refused(request, session, f"disable-{endpoint_id}", exc, form)

        def work(conn: sa.Connection) -> tuple[str, bool]:
            key = endpoint_rows.EndpointKey(
                who.principal.account_id, own_endpoint(conn, who.principal, endpoint_id)
            )
            done = endpoint_rows.disable(conn, key, reason=body.reason, now=utcnow(), kind="disabled")
            who.record(conn, "endpoint.disable", "endpoint", endpoint_id, now=utcnow(), reason=body.reason)
            return key.endpoint, done

        name, done = await web.write(work)
        note = f"{name} disabled: its deliveries wait" if done else f"{name} was already disabled"
        return web.redirect(request, "/endpoints", msg=note)

    async def limits(request: Request, session: Session) -> Response:
        form = await request.form()
        endpoint_id = endpoint_of(form)
        who = session.who
        await web.read(lambda conn: own_endpoint(conn, who.principal, endpoint_id))
        try:
            body = limits_input(form)
        except PydanticValidationError as exc:
            return await refused(request, session, f"limits-{endpoint_id}", exc, form)

        def work(conn: sa.Connection) -> str:
            key = endpoint_rows.EndpointKey(
                who.principal.account_id, own_endpoint(conn, who.principal, endpoint_id)
            )
            endpoint_rows.set_limits(conn, key, **body.model_dump(), now=utcnow())
            who.record(conn, "endpoint.limits", "endpoint", endpoint_id, now=utcnow(), **body.model_dump())
            return key.endpoint

        name = await web.write(work)
        return web.redirect(request, "/endpoints", msg=f"limits of {name} saved")

    async def lead_status(request: Request, session: Session) -> Response:
        form = await request.form()
        who = session.who
        account_id = who.principal.account_id

        def work(conn: sa.Connection, body: ThresholdsBody) -> None:
            found = set_thresholds(conn, account_id, body.thresholds)
            who.record(conn, "lead_status.update", "account", account_id, now=utcnow(), thresholds=len(found))

        try:
            body = ThresholdsBody(thresholds=threshold_rows(form))
            await web.write(lambda conn: work(conn, body))
        except (ContactSyncError, PydanticValidationError) as exc:
            return await refused(request, session, "thresholds", exc, form)
        return web.redirect(request, "/endpoints", msg="lead-status thresholds saved")

    return [
        web.page("/endpoints", show, role=VIEWER),
        web.page("/endpoints/disable", disable, methods=["POST"], role=EDITOR),
        web.page("/endpoints/limits", limits, methods=["POST"], role=EDITOR),
        web.page("/lead-status", lead_status, methods=["POST"], role=EDITOR),
    ]
