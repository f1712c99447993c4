"""Platform pages: dashboard, contacts (search, detail with fields and timeline), lists and fields, API keys.

Handlers read and write through the automation, delivery and API-key services; the only SQL here
is read-only listing and search that no service offers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.automation.contacts import get_contact
from contactsync.automation.lists import FieldIn, ListIn, create_field, create_list, list_fields
from contactsync.db.platform import accounts, activities, contacts, deliveries, endpoints, lists
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.errors import ContactSyncError
from contactsync.web import stats
from contactsync.web.app import Web
from contactsync.web.security import Session

PAGE_SIZE = 50
TIMELINE_ITEMS = 200


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return max(int(raw), 1) if raw.isdigit() else 1


def form_text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def default_account(conn: sa.Connection, now: datetime) -> int:
    """The account new lists go into: the first one (created on first use of an empty database)."""
    from contactsync.automation.lists import create_account

    found = conn.execute(sa.select(accounts.c.id).order_by(accounts.c.id).limit(1)).scalar()
    return int(found) if found is not None else create_account(conn, name="Default", now=now)


def routes(web: Web) -> list[BaseRoute]:
    async def dashboard(request: Request, session: Session) -> Response:
        data = await web.read(lambda conn: stats.dashboard(conn, now=utcnow()))
        return web.render(request, session, "platform/dashboard.html", d=data)

    async def enable_endpoint(request: Request, session: Session) -> Response:
        form = await request.form()
        raw = form_text(form, "endpoint_id")
        endpoint_id = int(raw) if raw.isdigit() and len(raw) < 19 else 0

        def enable(conn: sa.Connection) -> tuple[str, bool]:
            e = endpoints.c
            row = conn.execute(sa.select(e.account_id, e.endpoint).where(e.id == endpoint_id)).first()
            if row is None:
                return f"endpoint {raw or '(none)'}", False
            key = endpoint_rows.EndpointKey(row.account_id, row.endpoint)
            return f"{row.endpoint} (account {row.account_id})", endpoint_rows.enable(conn, key, now=utcnow())

        name, done = await web.write(enable)
        wake = web.extras.get("on_enqueue")
        if callable(wake):
            wake()
        return web.redirect(request, "/", msg=f"{name} enabled" if done else f"{name} was not disabled")

    async def contact_list(request: Request, session: Session) -> Response:
        q = request.query_params.get("q", "").strip()
        list_id = request.query_params.get("list", "")
        page = page_number(request)

        def load(conn: sa.Connection) -> tuple[list[Any], list[Any]]:
            c = contacts.c
            query = sa.select(c.id, c.list_id, c.email, c.phone, c.status, c.lead_score, c.updated_at)
            if q:
                like = f"%{q.lower()}%"
                query = query.where(sa.or_(c.email_key.like(like), c.phone.like(f"%{q}%")))
            if list_id.isdigit():
                query = query.where(c.list_id == int(list_id))
            rows = conn.execute(
                query.order_by(c.id.desc()).limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)
            )
            return list(rows), list(conn.execute(sa.select(lists.c.id, lists.c.name).order_by(lists.c.id)))

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

    async def contact_detail(request: Request, session: Session) -> Response:
        contact_id = int(request.path_params["contact_id"])

        def load(conn: sa.Connection) -> dict[str, Any]:
            contact = get_contact(conn, contact_id)
            a = activities.c
            timeline = conn.execute(
                sa.select(a.kind, a.ref_id, a.name, a.url, a.value, a.occurred_at)
                .where(a.contact_id == contact_id)
                .order_by(a.occurred_at.desc(), a.id.desc())
                .limit(TIMELINE_ITEMS)
            ).all()
            d = deliveries.c
            sent = conn.execute(
                sa.select(d.id, d.transactionid, d.state, d.method, d.url, d.attempt_count, d.created_at)
                .where(d.contact_id == contact_id)
                .order_by(d.id.desc())
                .limit(50)
            ).all()
            list_name = conn.execute(sa.select(lists.c.name).where(lists.c.id == contact.list_id)).scalar()
            return {"contact": contact, "timeline": timeline, "deliveries": sent, "list_name": list_name}

        try:
            data = await web.read(load)
        except ContactSyncError as exc:
            return web.render(request, session, "not_found.html", 404, what=str(exc))
        return web.render(request, session, "platform/contact.html", **data)

    async def list_index(request: Request, session: Session) -> Response:
        def load(conn: sa.Connection) -> list[dict[str, Any]]:
            out = []
            counts: dict[int, int] = dict(
                conn.execute(
                    sa.select(contacts.c.list_id, sa.func.count()).group_by(contacts.c.list_id)
                ).all()
            )
            for row in conn.execute(sa.select(lists).order_by(lists.c.id)):
                out.append(
                    {"list": row, "fields": list_fields(conn, row.id), "contacts": int(counts.get(row.id, 0))}
                )
            return out

        return web.render(request, session, "platform/lists.html", items=await web.read(load))

    async def list_create(request: Request, session: Session) -> Response:
        form = await request.form()
        name = form_text(form, "name")

        def create(conn: sa.Connection) -> None:
            now = utcnow()
            create_list(conn, ListIn(account_id=default_account(conn, now), name=name), now=now)

        return await _attempt(web, request, create, "/lists", f"list {name!r} created")

    async def field_create(request: Request, session: Session) -> Response:
        form = await request.form()
        list_id = int(request.path_params["list_id"])
        choices = [c.strip() for c in form_text(form, "choices").split(",") if c.strip()]
        key = form_text(form, "shortcode_key") or None

        def create(conn: sa.Connection) -> None:
            data = FieldIn(
                list_id=list_id,
                name=form_text(form, "name"),
                type=form_text(form, "type") or "text",
                shortcode_key=key,
                choices=choices,
            )
            create_field(conn, data, now=utcnow())

        return await _attempt(web, request, create, "/lists", "field added")

    async def key_index(request: Request, session: Session) -> Response:
        from contactsync.api.keys import list_keys

        keys = await web.read(lambda conn: list_keys(conn))
        return web.render(request, session, "platform/keys.html", keys=keys, created=None)

    async def key_create(request: Request, session: Session) -> Response:
        from contactsync.api.keys import create_key, list_keys

        form = await request.form()
        name = form_text(form, "name") or "unnamed"

        def create(conn: sa.Connection) -> Any:
            now = utcnow()
            return create_key(conn, account_id=default_account(conn, now), name=name[:200], now=now)

        created = await web.write(create)
        keys = await web.read(lambda conn: list_keys(conn))
        return web.render(request, session, "platform/keys.html", keys=keys, created=created)

    async def key_revoke(request: Request, session: Session) -> Response:
        from contactsync.api.keys import revoke_key

        key_id = int(request.path_params["key_id"])
        return await _attempt(
            web, request, lambda conn: revoke_key(conn, key_id, now=utcnow()), "/keys", "key revoked"
        )

    return [
        web.page("/", dashboard),
        web.page("/endpoints/enable", enable_endpoint, methods=["POST"]),
        web.page("/contacts", contact_list),
        web.page("/contacts/{contact_id:int}", contact_detail),
        web.page("/lists", list_index),
        web.page("/lists", list_create, methods=["POST"]),
        web.page("/lists/{list_id:int}/fields", field_create, methods=["POST"]),
        web.page("/keys", key_index),
        web.page("/keys", key_create, methods=["POST"]),
        web.page("/keys/{key_id:int}/revoke", key_revoke, methods=["POST"]),
    ]


async def _attempt(web: Web, request: Request, work: Any, back: str, ok: str) -> Response:
    """Run a write; on a service error go back with its one-line message instead of a 500."""
    try:
        await web.write(work)
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
