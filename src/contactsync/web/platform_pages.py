"""Platform pages: dashboard, contacts (search; one contact: contact_pages), lists and fields, API keys.

Handlers read and write through the automation, delivery and API-key services; the only SQL here
is read-only listing and search that no service offers. Everything is the signed-in user's account's:
queries are restricted to it, and ids are checked against it with the API's ownership checks
(:mod:`contactsync.api.deps`), so another account's id answers 404 like a missing one. Every change
records its audit row in its own transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.api.deps import account_lists, own_endpoint, own_list
from contactsync.api.keys import create_key, list_keys, revoke_key
from contactsync.automation.lists import FieldIn, ListIn, create_field, create_list, list_fields
from contactsync.db.platform import contacts, lists
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery import outbox
from contactsync.errors import ContactSyncError, NotFoundError
from contactsync.tenancy.roles import ROLES, Role
from contactsync.web import stats
from contactsync.web.app import Web
from contactsync.web.security import Session

VIEWER, EDITOR, OWNER = Role.VIEWER.value, Role.EDITOR.value, Role.OWNER.value

PAGE_SIZE = 50


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return max(int(raw), 1) if raw.isdigit() else 1


def form_text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def routes(web: Web) -> list[BaseRoute]:
    def wake() -> None:
        hook = web.extras.get("on_enqueue")
        if callable(hook):
            hook()

    async def dashboard(request: Request, session: Session) -> Response:
        account_id = session.who.principal.account_id
        data = await web.read(lambda conn: stats.dashboard(conn, account_id=account_id, now=utcnow()))
        return web.render(request, session, "platform/dashboard.html", d=data)

    async def enable_endpoint(request: Request, session: Session) -> Response:
        form = await request.form()
        raw = form_text(form, "endpoint_id")
        endpoint_id = int(raw) if raw.isdigit() and len(raw) < 19 else 0
        who = session.who

        def enable(conn: sa.Connection) -> tuple[str, bool]:
            caller = who.principal
            name = own_endpoint(conn, caller, endpoint_id)
            key = endpoint_rows.EndpointKey(caller.account_id, name)
            done = endpoint_rows.enable(conn, key, now=utcnow())
            if done:
                outbox.notify(conn)
            who.record(conn, "endpoint.enable", "endpoint", endpoint_id, now=utcnow())
            return name, done

        name, done = await web.write(enable)
        wake()
        back = "/endpoints" if form_text(form, "back") == "endpoints" else "/"
        return web.redirect(request, back, msg=f"{name} enabled" if done else f"{name} was not disabled")

    async def contact_list(request: Request, session: Session) -> Response:
        q = request.query_params.get("q", "").strip()
        list_id = request.query_params.get("list", "")
        page = page_number(request)
        account_id = session.who.principal.account_id

        def load(conn: sa.Connection) -> tuple[list[Any], list[Any]]:
            c = contacts.c
            query = sa.select(c.id, c.list_id, c.email, c.phone, c.status, c.lead_score, c.updated_at).where(
                c.list_id.in_(account_lists(account_id))
            )
            if q:
                like = f"%{q.lower()}%"
                query = query.where(sa.or_(c.email_key.like(like), c.phone.like(f"%{q}%")))
            if list_id.isdigit() and len(list_id) < 19:
                query = query.where(c.list_id == int(list_id))
            rows = conn.execute(
                query.order_by(c.id.desc()).limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)
            )
            mine = sa.select(lists.c.id, lists.c.name).where(lists.c.account_id == account_id)
            return list(rows), list(conn.execute(mine.order_by(lists.c.id)))

        rows, all_lists = await web.read(load)
        return web.render(
            request,
            session,
            "platform/contacts.html",
            rows=rows[:PAGE_SIZE],
            more=len(rows) > PAGE_SIZE,
            page=page,
            q=q,
            list_id=list_id,
            lists=all_lists,
        )

    async def list_index(request: Request, session: Session) -> Response:
        account_id = session.who.principal.account_id

        def load(conn: sa.Connection) -> list[dict[str, Any]]:
            out = []
            c = contacts.c
            counts: dict[int, int] = dict(
                conn.execute(
                    sa.select(c.list_id, sa.func.count())
                    .where(c.list_id.in_(account_lists(account_id)))
                    .group_by(c.list_id)
                ).all()
            )
            mine = sa.select(lists).where(lists.c.account_id == account_id).order_by(lists.c.id)
            for row in conn.execute(mine):
                out.append(
                    {"list": row, "fields": list_fields(conn, row.id), "contacts": int(counts.get(row.id, 0))}
                )
            return out

        return web.render(request, session, "platform/lists.html", items=await web.read(load))

    async def list_create(request: Request, session: Session) -> Response:
        form = await request.form()
        name = form_text(form, "name")
        who = session.who

        def create(conn: sa.Connection) -> None:
            now = utcnow()
            made = create_list(conn, ListIn(account_id=who.principal.account_id, name=name), now=now)
            who.record(conn, "list.create", "list", made.id, now=now, name=made.name)

        return await _attempt(web, request, create, "/lists", f"list {name!r} created")

    async def field_create(request: Request, session: Session) -> Response:
        form = await request.form()
        list_id = int(request.path_params["list_id"])
        choices = [c.strip() for c in form_text(form, "choices").split(",") if c.strip()]
        key = form_text(form, "shortcode_key") or None
        who = session.who

        def create(conn: sa.Connection) -> None:
            own_list(conn, who.principal, list_id)
            data = FieldIn(
                list_id=list_id,
                name=form_text(form, "name"),
                type=form_text(form, "type") or "text",
                shortcode_key=key,
                choices=choices,
            )
            now = utcnow()
            made = create_field(conn, data, now=now)
            who.record(conn, "field.create", "field", made.id, now=now, list_id=list_id, name=made.name)

        return await _attempt(web, request, create, "/lists", "field added")

    async def key_index(request: Request, session: Session) -> Response:
        account_id = session.who.principal.account_id
        keys = await web.read(lambda conn: list_keys(conn, account_id=account_id))
        return web.render(request, session, "platform/keys.html", keys=keys, created=None, roles=ROLES)

    async def key_create(request: Request, session: Session) -> Response:
        form = await request.form()
        name = form_text(form, "name") or "unnamed"
        role = form_text(form, "role") or Role.EDITOR.value
        who = session.who

        def create(conn: sa.Connection) -> Any:
            now = utcnow()
            account_id = who.principal.account_id
            made = create_key(conn, account_id=account_id, name=name[:200], role=role, now=now)
            who.record(conn, "key.create", "key", made.id, now=now, name=made.name, role=made.role)
            return made

        try:
            created = await web.write(create)
        except NotFoundError:
            raise
        except ContactSyncError as exc:
            return web.redirect(request, "/keys", err=error_message(exc))
        keys = await web.read(lambda conn: list_keys(conn, account_id=created.account_id))
        return web.render(request, session, "platform/keys.html", keys=keys, created=created, roles=ROLES)

    async def key_revoke(request: Request, session: Session) -> Response:
        key_id = int(request.path_params["key_id"])
        who = session.who

        def revoke(conn: sa.Connection) -> None:
            now = utcnow()
            done = revoke_key(conn, key_id, now=now, account_id=who.principal.account_id)
            who.record(conn, "key.revoke", "key", key_id, now=now, name=done.name)

        return await _attempt(web, request, revoke, "/keys", "key revoked")

    return [
        web.page("/", dashboard, role=VIEWER),
        web.page("/endpoints/enable", enable_endpoint, methods=["POST"], role=EDITOR),
        web.page("/contacts", contact_list, role=VIEWER),
        web.page("/lists", list_index, role=VIEWER),
        web.page("/lists", list_create, methods=["POST"], role=EDITOR),
        web.page("/lists/{list_id:int}/fields", field_create, methods=["POST"], role=EDITOR),
        web.page("/keys", key_index, role=OWNER),
        web.page("/keys", key_create, methods=["POST"], role=OWNER),
        web.page("/keys/{key_id:int}/revoke", key_revoke, methods=["POST"], role=OWNER),
    ]


async def _attempt(web: Web, request: Request, work: Any, back: str, ok: str) -> Response:
    """Run a write; on a service error go back with its one-line message instead of a 500 (a missing
    or another account's id still answers 404)."""
    try:
        await web.write(work)
    except NotFoundError:
        raise
    except (ContactSyncError, ValueError) as exc:  # service errors and pydantic input errors
        return web.redirect(request, back, err=error_message(exc))
    return web.redirect(request, back, msg=ok)


def error_message(exc: Exception) -> str:
    """One line for the flash message: the first pydantic error with its field path, else the message."""
    if not isinstance(exc, ValueError):
        return str(exc)
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', '')}".strip(": ")
        except (IndexError, TypeError):
            pass
    return str(exc).splitlines()[0]
