"""Platform pages: dashboard, contacts (search; one contact: contact_pages), lists and fields, API keys.

Handlers read and write through the automation, delivery and API-key services; the only SQL here
is read-only listing and search that no service offers. Everything is the signed-in user's account's:
queries are restricted to it, and ids are checked against it with the API's ownership checks
(:mod:`contactsync.api.deps`), so another account's id answers 404 like a missing one. Every change
records its audit row in its own transaction.

Every list is paged by id (:mod:`contactsync.web.paging`), each list of the account read through its
own (list_id, id) index range and merged, and a search reads index ranges of email keys or phones
(:mod:`contactsync.db.search`): no page reads more rows than it shows, however many contacts there are.
Counts that could be large are capped ("10,000+").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.api.deps import MAX_ID, own_endpoint, own_list
from contactsync.automation.lists import FieldIn, ListIn, create_field, create_list, list_fields
from contactsync.db import search
from contactsync.db.backend import backend_of
from contactsync.db.counting import CAP, capped, matching
from contactsync.db.platform import api_keys, contacts, lists
from contactsync.db.retention import Retention
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery import outbox
from contactsync.errors import ContactSyncError, NotFoundError
from contactsync.tenancy.keys import create_key, revoke_key
from contactsync.tenancy.roles import ROLES, Role
from contactsync.web import paging, stats
from contactsync.web.app import Web
from contactsync.web.forms import Problem, plain_error, typed_of
from contactsync.web.paging import IN_ORDER, NEWEST_FIRST, Seek, Window
from contactsync.web.security import Session

VIEWER, EDITOR, OWNER = Role.VIEWER.value, Role.EDITOR.value, Role.OWNER.value

PAGE_SIZE = paging.SIZE
CONTACT_COLUMNS = [contacts.c[name] for name in search.COLUMNS]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def id_param(request: Request, name: str) -> int | None:
    """A query parameter naming an id, or None when it is absent or not one."""
    raw = request.query_params.get(name, "").strip()
    return int(raw) if raw.isdigit() and len(raw) <= paging.MAX_ID_DIGITS else None


def form_text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def lists_window(conn: sa.Connection, account_id: int, at: Any) -> Window[dict[str, Any]]:
    """One page of the account's lists (newest first) with their fields and capped contact counts:
    the lists page, and the same page again beside a refused edit."""

    def fetch(seek: Seek, n: int) -> list[dict[str, Any]]:
        mine = sa.select(lists).where(lists.c.account_id == account_id)
        rows = conn.execute(paging.past(mine, lists.c.id, seek, n)).all()
        return [
            {
                "id": row.id,
                "list": row,
                "fields": list_fields(conn, row.id),
                "contacts": capped(conn, matching(contacts, contacts.c.list_id == row.id, by=contacts.c.id)),
            }
            for row in rows
        ]

    return paging.window(fetch, at, key=lambda item: item["id"])


def routes(web: Web) -> list[BaseRoute]:
    def wake() -> None:
        if web.wiring.on_enqueue is not None:
            web.wiring.on_enqueue()

    async def dashboard(request: Request, session: Session) -> Response:
        account_id = session.who.principal.account_id
        data = await web.read(lambda conn: stats.dashboard(conn, account_id=account_id, now=utcnow()))
        kept = stats.retention_text(Retention.from_settings(web.settings))
        return web.render(request, session, "platform/dashboard.html", d=data, retention=kept, cap=CAP)

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
        """Newest first; with ``q``, the contacts whose email starts with it (or whose phone is it),
        in email order."""
        q = request.query_params.get("q", "").strip()[:320]
        chosen = id_param(request, "list")
        account_id = session.who.principal.account_id
        at = paging.seek(request, IN_ORDER if q else NEWEST_FIRST)

        def load(conn: sa.Connection) -> tuple[Window[Any], list[Any]]:
            mine = conn.execute(
                sa.select(lists.c.id, lists.c.name)
                .where(lists.c.account_id == account_id)
                .order_by(lists.c.id)
            ).all()
            searched = [r.id for r in mine if chosen is None or r.id == chosen]
            params = {"q": q, "list": chosen}
            if q:
                found = paging.window(
                    lambda seek, n: _search(conn, searched, q, seek, n),
                    at,
                    key=lambda r: r.id,
                    params=params,
                    direction=IN_ORDER,
                )
            else:
                found = paging.window(
                    lambda seek, n: _newest_contacts(conn, searched, seek, n),
                    at,
                    key=lambda r: r.id,
                    params=params,
                )
            return found, list(mine)

        found, all_lists = await web.read(load)
        return web.render(
            request,
            session,
            "platform/contacts.html",
            page=found,
            q=q,
            list_id=str(chosen) if chosen is not None else "",
            lists=all_lists,
        )

    async def list_index(request: Request, session: Session) -> Response:
        """The account's lists, newest first, with their fields and a capped count of contacts."""
        account_id = session.who.principal.account_id
        at = paging.seek(request)
        found = await web.read(lambda conn: lists_window(conn, account_id, at))
        return web.render(request, session, "platform/lists.html", items=found.rows, page=found)

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

        try:
            await web.write(create)
        except NotFoundError:
            raise
        except (ContactSyncError, ValueError) as exc:  # the page again, what was typed kept
            field, message = plain_error(exc, new_field_input)
            if not field and "choices" in message:  # FieldIn's model check: choices and type go together
                field = "choices"
            problem = Problem(f"new-field-{list_id}", message, field, typed_of(form))
            account_id = who.principal.account_id
            found = await web.read(lambda conn: lists_window(conn, account_id, paging.seek(request)))
            return web.render(
                request, session, "platform/lists.html", 422, items=found.rows, page=found, problem=problem
            )
        return web.redirect(request, "/lists", msg="field added")

    def keys_page(conn: sa.Connection, account_id: int, at: Seek) -> Window[Any]:
        k = api_keys.c
        mine = sa.select(k.id, k.name, k.role, k.prefix, k.created_at, k.last_used_at, k.revoked_at).where(
            k.account_id == account_id
        )
        return paging.window(
            lambda seek, n: conn.execute(paging.past(mine, k.id, seek, n)).all(), at, key=lambda r: r.id
        )

    async def key_index(request: Request, session: Session) -> Response:
        account_id = session.who.principal.account_id
        at = paging.seek(request)
        found = await web.read(lambda conn: keys_page(conn, account_id, at))
        return web.render(
            request, session, "platform/keys.html", keys=found.rows, page=found, created=None, roles=ROLES
        )

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
        found = await web.read(lambda conn: keys_page(conn, created.account_id, Seek()))
        return web.render(
            request, session, "platform/keys.html", keys=found.rows, page=found, created=created, roles=ROLES
        )

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


def _newest_contacts(conn: sa.Connection, list_ids: list[int], at: Seek, n: int) -> list[Any]:
    """The ``n`` contacts of ``list_ids`` past ``at`` by id: one (list_id, id) index range per list."""
    if backend_of(conn).row_value_ranges:
        per_list = [_list_range(i, at, n) for i in list_ids]
    else:
        c = contacts.c
        per_list = [
            paging.past(sa.select(*CONTACT_COLUMNS).where(c.list_id == i), c.id, at, n) for i in list_ids
        ]
    return paging.nearest(paging.union(conn, per_list), n, key=lambda r: r.id, at=at)


def _list_range(list_id: int, at: Seek, n: int) -> sa.Select[Any]:
    """PostgreSQL: the ``n`` contacts of one list past ``at`` by id, bounded and ordered by the row
    (list_id, id).

    With ``list_id = X`` PostgreSQL may walk the primary key newest first and filter by list instead
    when the list holds most contacts: if the newest ids belong to lists imported since, that reads
    them all (measured: 99,500 rows for a page of 51). Bounding the row (list_id, id) on both sides
    keeps every row in the list and leaves (list_id, id) the only index giving that order. (SQLite
    would read such a row bound as a range of lists only: there the equality serves.)"""
    c = contacts.c
    row = sa.tuple_(c.list_id, c.id)
    mark = None if at.past is None else int(at.past)
    query = sa.select(*CONTACT_COLUMNS)
    if not at.backward:  # older: newest first, below the mark
        query = query.where(row < sa.tuple_(list_id, MAX_ID if mark is None else mark), c.list_id >= list_id)
        return query.order_by(c.list_id.desc(), c.id.desc()).limit(n)
    query = query.where(row > sa.tuple_(list_id, 0 if mark is None else mark), c.list_id <= list_id)
    return query.order_by(c.list_id.asc(), c.id.asc()).limit(n)


def _search(conn: sa.Connection, list_ids: list[int], q: str, at: Seek, n: int) -> list[Any]:
    """The ``n`` contacts of ``list_ids`` matching ``q`` past ``at`` in (email_key, list_id) order."""
    position = None
    if at.past is not None:  # the contact the link names: where its page ended
        c = contacts.c
        mark = conn.execute(
            sa.select(c.email_key, c.list_id).where(c.id == int(at.past), c.list_id.in_(list_ids))
        ).first()
        if mark is None:
            return []
        position = (mark.email_key, mark.list_id)
    branches = search.branches(
        list_ids, q, backend_of(conn), position=position, backward=at.backward, limit=n
    )
    rows = paging.union(conn, branches)
    return paging.nearest(rows, n, key=lambda r: (r.email_key, r.list_id), at=at, descending=False)


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


def new_field_input(loc: list[str]) -> str:
    """The "add a field" form's input an error location points at."""
    head = loc[0] if loc else ""
    return head if head in ("name", "type", "shortcode_key", "choices") else ""


def error_message(exc: Exception) -> str:
    """One line for the flash message: the first pydantic error with its field path, else the message."""
    if not isinstance(exc, ValueError):
        return str(exc)
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            message = str(first.get("msg", "")).removeprefix("Value error, ")
            return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {message}".strip(": ")
        except (IndexError, TypeError):
            pass
    return str(exc).splitlines()[0]
