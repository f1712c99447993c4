"""Listener pages: recent syncs (raw and decoded), projected contacts, handler status, failures and replay.

The inbox and handler runs are read from the listener database; the projection may live in the
customer's own database (``listener_projection_url``), read through its own engine. Decoding a
stored request uses the listener's own :func:`~contactsync.listener.library.parse` and limits, so
the page shows exactly what the handlers received.

However long the history, a page reads what it shows: lists are paged by id ("older" carries the last
one shown), totals are capped counts ("10,000+"), handler figures come from the (handler, state)
indexes, and failures from the partial index of unfinished runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.db.counting import CAP, capped, matching
from contactsync.db.listener import (
    KEY_LENGTH,
    PROJECTION_TABLES,
    field_values,
    handler_attempts,
    handler_runs,
    in_state,
    inbox,
)
from contactsync.db.listener import contacts as sync_contacts
from contactsync.errors import ContactSyncError
from contactsync.listener.handlers import replay
from contactsync.listener.library import Limits, parse
from contactsync.web import paging
from contactsync.web.app import Web
from contactsync.web.platform_pages import form_text
from contactsync.web.security import Session
from contactsync.wire import sender
from contactsync.wire.payload import SyncPayload

ACTIVITY_TABLES = tuple(t for t in PROJECTION_TABLES if t.name not in {"sync_contacts", "sync_field_values"})
MAX_HANDLERS = 100
"""Handler names read from the runs' index, one seek each (a listener runs a handful)."""


def _limits(web: Web) -> Limits:
    s = web.settings
    return Limits(
        max_body_bytes=s.listener_max_body_bytes,
        max_input_vars=s.listener_max_input_vars,
        max_nesting=s.listener_max_nesting,
        tolerance_s=s.listener_tolerance_s,
    )


def _decode(web: Web, row: Any) -> SyncPayload:
    """A stored request decoded as the handlers received it (raises what the decoder raises)."""
    return parse(
        row.body,
        row.content_type,
        method=row.method,
        query=row.query,
        limits=_limits(web),
        webhook_id=row.transactionid,
        received_at_ms=row.received_at_ms,
        get_mapping=web.settings.listener_get_mapping,
    )


@dataclass(frozen=True)
class Who:
    """Whom a stored sync is about and who sent it, in words: the contact's email and the sending
    action as the platform's (unsigned, display-only) headers name it."""

    contact_id: str = ""
    email: str = ""
    sender: str = ""
    sender_action: str = ""


def _who(row: Any, payload: SyncPayload | None) -> Who:
    """``payload``: the row decoded, or None when it could not be (then only the sender is known)."""
    action, name = sender.claimed(json.loads(row.headers or "{}"))
    if payload is None:
        return Who(sender=name, sender_action=action)
    contact = payload.contact
    return Who(str(contact.id or ""), contact.email, name, action)


def _decoded(web: Web, row: Any) -> SyncPayload | None:
    try:
        return _decode(web, row)
    except ContactSyncError:
        return None


def routes(web: Web) -> list[BaseRoute]:
    def projection_engine() -> sa.Engine:
        return web.wiring.projection_engine or web.engine

    async def read_projection(fn: Any) -> Any:
        def work() -> Any:
            with projection_engine().connect() as conn:
                return fn(conn)

        return await run_in_threadpool(work)

    async def recent(request: Request, session: Session) -> Response:
        at = paging.seek(request)

        def load(conn: sa.Connection) -> dict[str, Any]:
            i = inbox.c
            query = sa.select(
                i.id, i.transactionid, i.received_at_ms, i.method, i.content_type, i.source_address,
                sa.func.length(i.body).label("size"), i.query, i.headers, i.body,
            )  # fmt: skip
            found = paging.window(
                lambda seek, n: conn.execute(paging.past(query, i.id, seek, n)).all(), at, key=lambda r: r.id
            )
            h = handler_runs.c
            states: dict[int, dict[str, str]] = {}
            ids = [r.id for r in found.rows]
            if ids:
                for inbox_id, name, state in conn.execute(
                    sa.select(h.inbox_id, h.handler, h.state).where(h.inbox_id.in_(ids))
                ):
                    states.setdefault(inbox_id, {})[name] = state
            return {
                "rows": found.rows,
                "page": found,
                "who": {r.id: _who(r, _decoded(web, r)) for r in found.rows},
                "states": states,
                "total": capped(conn, matching(inbox, by=i.id)),
            }

        data = await web.read(load)
        projected = await read_projection(
            lambda conn: capped(conn, matching(sync_contacts, by=sync_contacts.c.contact_id))
        )
        return web.render(request, session, "listener/recent.html", projected=projected, **data)

    async def sync_detail(request: Request, session: Session) -> Response:
        tid = request.path_params["transactionid"]

        def load(conn: sa.Connection) -> tuple[Any, list[Any], dict[int, list[Any]]]:
            row = conn.execute(sa.select(inbox).where(inbox.c.transactionid == tid)).first()
            runs: list[Any] = []
            attempts: dict[int, list[Any]] = {}
            if row is not None:
                runs = list(
                    conn.execute(
                        sa.select(handler_runs)
                        .where(handler_runs.c.inbox_id == row.id)
                        .order_by(handler_runs.c.handler)
                    )
                )
                for attempt in conn.execute(
                    sa.select(handler_attempts)
                    .where(handler_attempts.c.run_id.in_([r.id for r in runs]))
                    .order_by(handler_attempts.c.id)
                ):
                    attempts.setdefault(attempt.run_id, []).append(attempt)
            return row, runs, attempts

        row, runs, attempts = await web.read(load)
        if row is None:
            return web.render(
                request, session, "not_found.html", 404, what=f"no sync with transactionid {tid}"
            )
        decoded: Any
        payload: SyncPayload | None = None
        try:
            payload = _decode(web, row)
            decoded = payload.to_wire(json_types=True)
            problem = ""
        except ContactSyncError as exc:
            decoded, problem = None, str(exc)
        headers = json.loads(row.headers or "{}")
        return web.render(
            request,
            session,
            "listener/sync.html",
            s=row,
            runs=runs,
            attempts=attempts,
            decoded=decoded,
            problem=problem,
            headers=headers,
            who=_who(row, payload),
        )

    async def contact_list(request: Request, session: Session) -> Response:
        """By contact id, highest first; ``q`` finds a contact id or an email exactly (both indexed)."""
        q = request.query_params.get("q", "").strip()[:320]
        at = paging.seek(request, numeric=False, max_len=KEY_LENGTH)

        def load(conn: sa.Connection) -> paging.Window[Any]:
            c = sync_contacts.c
            query = sa.select(sync_contacts)
            if q:
                query = query.where(sa.or_(c.contact_id == q, c.email == q))
            return paging.window(
                lambda seek, n: conn.execute(paging.past(query, c.contact_id, seek, n, value=str)).all(),
                at,
                key=lambda r: r.contact_id,
                params={"q": q},
            )

        found = await read_projection(load)
        return web.render(request, session, "listener/contacts.html", rows=found.rows, page=found, q=q)

    async def contact_detail(request: Request, session: Session) -> Response:
        contact_id = request.path_params["contact_id"]

        def load(conn: sa.Connection) -> dict[str, Any]:
            row = conn.execute(
                sa.select(sync_contacts).where(sync_contacts.c.contact_id == contact_id)
            ).first()
            values = conn.execute(
                sa.select(field_values)
                .where(field_values.c.contact_id == contact_id)
                .order_by(field_values.c.field_id)
            ).all()
            activity = {}
            for table in ACTIVITY_TABLES:
                rows = conn.execute(
                    sa.select(table)
                    .where(table.c.contact_id == contact_id)
                    .order_by(table.c.id.desc())
                    .limit(100)
                ).all()
                if rows:
                    activity[table.name.removeprefix("sync_")] = [
                        {
                            k: v
                            for k, v in r._mapping.items()
                            if k not in {"id", "contact_id"} and not k.endswith("sha256")
                        }
                        for r in rows
                    ]
            return {"c": row, "values": values, "activity": activity}

        data = await read_projection(load)
        if data["c"] is None:
            return web.render(request, session, "not_found.html", 404, what=f"no synced contact {contact_id}")
        return web.render(request, session, "listener/contact.html", **data)

    async def handlers_page(request: Request, session: Session) -> Response:
        at_failures = paging.seek(request, prefix="failures_")
        at_attempts = paging.seek(request, prefix="attempts_")

        def load(conn: sa.Connection) -> dict[str, Any]:
            h = handler_runs.c
            counts: dict[str, dict[str, Any]] = {}
            for name in handler_names(conn):
                counts[name] = {
                    state: capped(
                        conn,
                        matching(handler_runs, h.handler == name, h.state == state, by=h.next_attempt_at_ms),
                    )
                    for state in ("pending", "done", "failed")
                }
                counts[name]["oldest_ms"] = conn.execute(  # the partial index of unfinished runs
                    sa.select(sa.func.min(h.received_at_ms)).where(h.handler == name, in_state("pending"))
                ).scalar()
            failures = paging.window(
                lambda seek, n: unresolved(conn, list(counts), seek, n),
                at_failures,
                key=lambda r: r.id,
                params=_kept(request, "attempts_"),
                prefix="failures_",
            )
            a = handler_attempts.c
            calls = (
                sa.select(
                    a.id,
                    h.handler,
                    a.attempt,
                    a.at_ms,
                    a.ok,
                    a.status,
                    a.duration_ms,
                    a.target,
                    a.detail,
                    inbox.c.transactionid,
                )
                .join(handler_runs, h.id == a.run_id)
                .join(inbox, inbox.c.id == h.inbox_id)
            )
            attempts = paging.window(
                lambda seek, n: conn.execute(paging.past(calls, a.id, seek, n)).all(),
                at_attempts,
                key=lambda r: r.id,
                params=_kept(request, "failures_"),
                prefix="attempts_",
            )
            return {
                "counts": counts,
                "failures": failures.rows,
                "failures_page": failures,
                "attempts": attempts.rows,
                "attempts_page": attempts,
            }

        return web.render(request, session, "listener/handlers.html", cap=CAP, **await web.read(load))

    async def replay_run(request: Request, session: Session) -> Response:
        form = await request.form()
        tid, handler = form_text(form, "transactionid"), form_text(form, "handler")
        try:
            await run_in_threadpool(replay, web.engine, tid, handler)
        except ContactSyncError as exc:
            return web.redirect(request, "/handlers", err=str(exc))
        back = form_text(form, "back")
        return web.redirect(
            request, back if back.startswith("/") else "/handlers", msg=f"{handler} will run {tid} again"
        )

    return [
        web.page("/", recent),
        web.page("/syncs/{transactionid}", sync_detail),
        web.page("/contacts", contact_list),
        web.page("/contacts/{contact_id}", contact_detail),
        web.page("/handlers", handlers_page),
        web.page("/replay", replay_run, methods=["POST"]),
    ]


def unresolved(conn: sa.Connection, names: list[str], at: paging.Seek, n: int) -> list[Any]:
    """Runs not done whose last attempt failed, past ``at`` by id: per handler and state, from the
    partial index of unfinished runs (a backlog's worth of rows, never the history)."""
    h = handler_runs.c
    columns = (
        h.id,
        h.handler,
        h.state,
        h.attempts,
        h.last_error,
        h.next_attempt_at_ms,
        inbox.c.transactionid,
    )
    branches = [
        paging.past(
            sa.select(*columns)
            .join(inbox, inbox.c.id == h.inbox_id)
            .where(h.handler == name, in_state(state), h.last_error.is_not(None)),
            h.id,
            at,
            n,
        )
        for name in names
        for state in ("pending", "failed")
    ]
    return paging.nearest(paging.union(conn, branches), n, key=lambda r: r.id, at=at)


def handler_names(conn: sa.Connection) -> list[str]:
    """The handlers that have runs, one index seek each (no scan of the runs, however many)."""
    h = handler_runs.c
    names: list[str] = []
    while len(names) < MAX_HANDLERS:
        after = h.handler > names[-1] if names else h.handler > ""
        name = conn.execute(sa.select(sa.func.min(h.handler)).where(after)).scalar()
        if name is None:
            break
        names.append(name)
    return names


def _kept(request: Request, prefix: str) -> dict[str, str]:
    """The query parameters of another list's place on the page (kept in this list's links)."""
    return {k: v for k, v in request.query_params.items() if k.startswith(prefix)}
