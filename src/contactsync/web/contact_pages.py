"""The contact page (fields, explain panel, deliveries, timeline) and creating, editing and deleting a
contact in the admin UI.

Saving goes through the API's path, :func:`~contactsync.automation.events.save_contact`, so a created
or changed contact fires its automations and their deliveries commit with it. Each custom field gets
the input of its type (a select for a choice field); a refused form comes back with the message beside
the input it names and everything typed kept. The explain panel says, for each automation of the
contact's list, why the contact did or would (not) sync.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.api.deps import account_lists, own_contact, own_list
from contactsync.automation.contacts import ContactIn, ContactOut, delete_contact, find_contact, get_contact
from contactsync.automation.events import save_contact
from contactsync.automation.lists import FieldOut, list_fields
from contactsync.db.errors import translated
from contactsync.db.platform import activities, deliveries, lists
from contactsync.errors import ConflictError, ConstraintError, ContactSyncError, UnstorableValueError
from contactsync.web.app import Web
from contactsync.web.automation_pages import runtime_of, wake
from contactsync.web.explain_panel import panels
from contactsync.web.forms import Problem, explain_error, small_int, typed_of
from contactsync.web.platform_pages import EDITOR, VIEWER, form_text, utcnow
from contactsync.web.security import Session

TIMELINE_ITEMS = 200
DELIVERIES_SHOWN = 50
STATUSES = ("subscribed", "unsubscribed")
DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def input_of(field: FieldOut, value: str) -> dict[str, Any]:
    """How a field is typed in: the HTML input type, or ``select`` with its options for a choice."""
    name = f"field:{field.id}"
    if field.type == "choice":
        options = list(field.choices)
        if value and value not in options:  # a value from before the choices changed stays visible
            options.append(value)
        return {"name": name, "kind": "select", "options": options, "value": value}
    kind = {"number": "number", "email": "email", "phone": "tel", "text": "text"}.get(field.type, "text")
    if field.type == "date":
        kind = "date" if not value or DATE_ONLY.match(value) else "text"  # a stored time keeps its text
    return {"name": name, "kind": kind, "value": value}


def form_inputs(
    defs: list[FieldOut], values: dict[int, str], problem: Problem | None
) -> list[dict[str, Any]]:
    out = []
    for f in defs:
        value = values.get(f.id, "")
        if problem is not None:
            value = str(problem.value(f"field:{f.id}", value))
        out.append({**input_of(f, value), "field": f})
    return out


def input_name(field: str) -> str:
    """The form input a service error names (``fields.12`` → ``field:12``)."""
    if field.startswith("fields."):
        return "field:" + field.removeprefix("fields.")
    return field


def contact_input(form: Any, list_id: int, email: str, defs: list[FieldOut], *, creating: bool) -> ContactIn:
    """The submitted form as the contact service's input: an emptied field clears its value (editing);
    a field the form did not show (added since the page was read) is left alone."""
    values: dict[str, str | None] = {}
    for f in defs:
        raw = form_text(form, f"field:{f.id}")
        if raw or (not creating and f"field:{f.id}" in form):
            values[str(f.id)] = raw or None
    phone = form.get("phone")
    return ContactIn(
        list_id=list_id,
        email=email,
        phone=phone.strip() if isinstance(phone, str) else None,
        status=form_text(form, "status") or None,
        fields=dict(values),
    )


def _problem(form_id: str, exc: Exception, form: Any) -> Problem:
    field, message = explain_error(exc)
    return Problem(form_id, message, input_name(field), typed_of(form))


def _own_contact(conn: sa.Connection, who: Any, contact_id: int) -> ContactOut:
    """The contact, if it is the signed-in account's (404 otherwise)."""
    own_contact(conn, who.principal, contact_id)
    return get_contact(conn, contact_id)


def routes(web: Web) -> list[BaseRoute]:
    async def detail(
        request: Request, session: Session, *, status: int = 200, problem: Problem | None = None
    ) -> Response:
        contact_id = int(request.path_params["contact_id"])
        caller = session.who.principal
        rt = runtime_of(web)

        def load(conn: sa.Connection) -> dict[str, Any]:
            own_contact(conn, caller, contact_id)
            contact = get_contact(conn, contact_id)
            a = activities.c
            timeline = conn.execute(
                sa.select(a.kind, a.ref_id, a.name, a.url, a.value, a.occurred_at, a.delivery_id)
                .where(a.contact_id == contact_id)
                .order_by(a.occurred_at.desc(), a.id.desc())
                .limit(TIMELINE_ITEMS)
            ).all()
            d = deliveries.c
            sent = conn.execute(
                sa.select(d.id, d.transactionid, d.state, d.method, d.url, d.attempt_count, d.created_at)
                .where(d.contact_id == contact_id, d.account_id == caller.account_id)
                .order_by(d.id.desc())
                .limit(DELIVERIES_SHOWN)
            ).all()
            list_name = conn.execute(sa.select(lists.c.name).where(lists.c.id == contact.list_id)).scalar()
            defs = list_fields(conn, contact.list_id)
            values = {v.id: v.value for v in contact.fields}
            return {
                "contact": contact,
                "timeline": timeline,
                "deliveries": sent,
                "list_name": list_name,
                "inputs": form_inputs(defs, values, problem),
                "panels": panels(conn, rt, contact.list_id, contact_id),
            }

        data = await web.read(load)
        return web.render(
            request, session, "platform/contact.html", status, problem=problem, statuses=STATUSES, **data
        )

    async def new(
        request: Request, session: Session, *, status: int = 200, problem: Problem | None = None
    ) -> Response:
        account_id = session.who.principal.account_id
        list_id = small_int(request.query_params.get("list", ""))
        if problem is not None:
            list_id = small_int(str(problem.value("list_id")))
        caller = session.who.principal

        def load(conn: sa.Connection) -> dict[str, Any]:
            mine = conn.execute(
                sa.select(lists.c.id, lists.c.name).where(lists.c.id.in_(account_lists(account_id)))
                .order_by(lists.c.id)
            ).all()  # fmt: skip
            if list_id is None:
                return {"lists": mine, "chosen": None, "inputs": []}
            own_list(conn, caller, list_id)
            chosen = next(r for r in mine if r.id == list_id)
            return {
                "lists": mine,
                "chosen": chosen,
                "inputs": form_inputs(list_fields(conn, list_id), {}, problem),
            }

        data = await web.read(load)
        return web.render(
            request, session, "platform/contact_new.html", status, problem=problem, statuses=STATUSES, **data
        )

    async def show_new(request: Request, session: Session) -> Response:
        return await new(request, session)

    async def create(request: Request, session: Session) -> Response:
        form = await request.form()
        who = session.who
        list_id = small_int(form_text(form, "list_id"))
        if list_id is None:
            return web.redirect(request, "/contacts/new", err="choose the contact's list")
        await web.read(lambda conn: own_list(conn, who.principal, list_id))  # another account's: 404
        rt = runtime_of(web)
        email = form_text(form, "email")

        def work(conn: sa.Connection) -> tuple[ContactOut, int]:
            own_list(conn, who.principal, list_id)
            data = contact_input(form, list_id, email, list_fields(conn, list_id), creating=True)
            existing = find_contact(conn, list_id=list_id, email=email)
            if existing is not None:
                raise ConflictError(f"{email} is already in this list (contact {existing})", field="email")
            result, fired = save_contact(conn, rt, data)
            who.record(conn, "contact.upsert", "contact", result.contact.id, now=utcnow(), created=True,
                       changed_fields=result.changed_fields)  # fmt: skip
            return result.contact, len(fired.transactionids)

        try:
            with translated():
                made, queued = await web.write(work)
        except ConstraintError:  # created by someone else in the meantime
            exc = ConflictError(f"{email} is already in this list", field="email")
            return await new(request, session, status=422, problem=_problem("contact", exc, form))
        except UnstorableValueError:
            raise  # answered as on every other page, not as a problem with the form
        except (ContactSyncError, PydanticValidationError) as exc:
            return await new(request, session, status=422, problem=_problem("contact", exc, form))
        if queued:
            wake(web)
        return web.redirect(
            request, f"/contacts/{made.id}", msg=f"contact created; {queued} deliveries queued"
        )

    async def update(request: Request, session: Session) -> Response:
        contact_id = int(request.path_params["contact_id"])
        form = await request.form()
        who = session.who
        rt = runtime_of(web)

        found = await web.read(lambda conn: _own_contact(conn, who, contact_id))

        def work(conn: sa.Connection) -> int:
            own_contact(conn, who.principal, contact_id)
            data = contact_input(
                form, found.list_id, found.email, list_fields(conn, found.list_id), creating=False
            )
            result, fired = save_contact(conn, rt, data)
            who.record(conn, "contact.update", "contact", contact_id, now=utcnow(), created=False,
                       changed_fields=result.changed_fields)  # fmt: skip
            return len(fired.transactionids)

        try:
            queued = await web.write(work)
        except (ContactSyncError, PydanticValidationError) as exc:
            return await detail(request, session, status=422, problem=_problem("contact", exc, form))
        if queued:
            wake(web)
        return web.redirect(
            request, f"/contacts/{contact_id}", msg=f"contact saved; {queued} deliveries queued"
        )

    async def remove(request: Request, session: Session) -> Response:
        contact_id = int(request.path_params["contact_id"])
        form = await request.form()
        who = session.who

        found = await web.read(lambda conn: _own_contact(conn, who, contact_id))
        if form_text(form, "confirm") != "yes":
            return web.redirect(
                request, f"/contacts/{contact_id}", err="tick the box to confirm the deletion"
            )

        def work(conn: sa.Connection) -> None:
            own_contact(conn, who.principal, contact_id)
            delete_contact(conn, contact_id)
            who.record(conn, "contact.delete", "contact", contact_id, now=utcnow(), email=found.email)

        await web.write(work)
        return web.redirect(request, f"/contacts?list={found.list_id}", msg=f"contact {found.email} deleted")

    async def show(request: Request, session: Session) -> Response:
        return await detail(request, session)

    return [
        web.page("/contacts/new", show_new, role=EDITOR),
        web.page("/contacts/new", create, methods=["POST"], role=EDITOR),
        web.page("/contacts/{contact_id:int}", show, role=VIEWER),
        web.page("/contacts/{contact_id:int}", update, methods=["POST"], role=EDITOR),
        web.page("/contacts/{contact_id:int}/delete", remove, methods=["POST"], role=EDITOR),
    ]
