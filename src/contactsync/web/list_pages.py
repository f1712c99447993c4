"""The lists page's edit forms: rename and delete lists and fields, change a field's shortcode key (and
the templates that use it) or a choice field's choices.

Everything goes through :mod:`contactsync.automation.editing` with the API's input models, so the UI
refuses exactly what the API refuses: deleting what is still in use, or a key change while templates
use the old key without "also update the templates". The refusal names each automation, trigger or
template in the way, and is shown beside the form that asked, with what was typed kept.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.api.deps import own_field, own_list
from contactsync.api.routes.lists import FieldPatch, ListPatch
from contactsync.automation import editing
from contactsync.errors import ContactSyncError, NotFoundError
from contactsync.web import paging
from contactsync.web.app import Web
from contactsync.web.forms import Problem, explain_error, typed_of
from contactsync.web.platform_pages import EDITOR, form_text, lists_window, utcnow
from contactsync.web.security import Session


def field_patch(form: Any, current: Any) -> FieldPatch:
    """The field form as the API's patch: an unchanged key is not a change; choices one per line."""
    key = form_text(form, "shortcode_key")
    choices = None
    if current.type == "choice":
        choices = [line.strip() for line in form_text(form, "choices").splitlines() if line.strip()]
    return FieldPatch.model_validate(
        {
            "name": form_text(form, "name"),
            "shortcode_key": None if key.upper() == current.shortcode_key else key,
            "choices": choices,
            "update_templates": form_text(form, "update_templates") == "yes",
        }
    )


def routes(web: Web) -> list[BaseRoute]:
    async def refused(
        request: Request, session: Session, form_id: str, exc: Exception, form: Any
    ) -> Response:
        """The lists page again, the refusal beside the form ``form_id`` and its inputs as typed."""
        field, message = explain_error(exc)
        problem = Problem(form_id, message, field, typed_of(form))
        account_id = session.who.principal.account_id
        found = await web.read(lambda conn: lists_window(conn, account_id, paging.seek(request)))
        return web.render(
            request, session, "platform/lists.html", 422, items=found.rows, page=found, problem=problem
        )

    async def attempt(
        request: Request, session: Session, form: Any, form_id: str, work: Any, ok: str
    ) -> Response:
        try:
            note = await web.write(work)
        except NotFoundError as exc:
            if exc.field in ("list_id", "field_id"):  # the id the form is about: 404 like a missing one
                raise
            return await refused(request, session, form_id, exc, form)
        except (ContactSyncError, PydanticValidationError) as exc:
            return await refused(request, session, form_id, exc, form)
        return web.redirect(request, "/lists", msg=note or ok)

    async def rename_list(request: Request, session: Session) -> Response:
        list_id = int(request.path_params["list_id"])
        form = await request.form()
        who = session.who
        await web.read(lambda conn: own_list(conn, who.principal, list_id))

        def work(conn: sa.Connection) -> str:
            own_list(conn, who.principal, list_id)
            body = ListPatch.model_validate({"name": form_text(form, "name")})
            editing.rename_list(conn, list_id, body.name)
            who.record(conn, "list.rename", "list", list_id, now=utcnow(), name=body.name)
            return f"list renamed {body.name!r}"

        return await attempt(request, session, form, f"list-{list_id}", work, "list renamed")

    async def delete_list(request: Request, session: Session) -> Response:
        list_id = int(request.path_params["list_id"])
        form = await request.form()
        who = session.who
        await web.read(lambda conn: own_list(conn, who.principal, list_id))
        if form_text(form, "confirm") != "yes":
            return web.redirect(request, "/lists", err="tick the box to confirm the deletion")

        def work(conn: sa.Connection) -> str:
            own_list(conn, who.principal, list_id)
            gone = editing.delete_list(conn, list_id)
            who.record(conn, "list.delete", "list", list_id, now=utcnow(), name=gone.name)
            return f"list {gone.name!r} deleted with its fields and contacts"

        return await attempt(request, session, form, f"delete-list-{list_id}", work, "list deleted")

    async def update_field(request: Request, session: Session) -> Response:
        field_id = int(request.path_params["field_id"])
        form = await request.form()
        who = session.who

        def current(conn: sa.Connection) -> Any:
            own_field(conn, who.principal, field_id)
            return editing.get_field(conn, field_id)

        found = await web.read(current)

        def work(conn: sa.Connection) -> str:
            own_field(conn, who.principal, field_id)
            body = field_patch(form, found)
            changed = editing.update_field(
                conn,
                field_id,
                name=body.name,
                shortcode_key=body.shortcode_key,
                choices=body.choices,
                update_templates=body.update_templates,
                now=utcnow(),
            )
            detail = body.model_dump(exclude_none=True) | {"updated_actions": changed.updated_actions}
            who.record(conn, "field.update", "field", field_id, now=utcnow(), **detail)
            note = f"field {changed.field.name!r} saved"
            if changed.updated_actions:
                ids = ", ".join(f"#{i}" for i in changed.updated_actions)
                note += f"; the URL templates of actions {ids} now use [#{changed.field.shortcode_key}#]"
            return note

        return await attempt(request, session, form, f"field-{field_id}", work, "field saved")

    async def delete_field(request: Request, session: Session) -> Response:
        field_id = int(request.path_params["field_id"])
        form = await request.form()
        who = session.who
        await web.read(lambda conn: own_field(conn, who.principal, field_id))
        if form_text(form, "confirm") != "yes":
            return web.redirect(request, "/lists", err="tick the box to confirm the deletion")

        def work(conn: sa.Connection) -> str:
            own_field(conn, who.principal, field_id)
            gone = editing.delete_field(conn, field_id)
            who.record(conn, "field.delete", "field", field_id, now=utcnow(), name=gone.name)
            return f"field {gone.name!r} deleted with its values"

        return await attempt(request, session, form, f"delete-field-{field_id}", work, "field deleted")

    return [
        web.page("/lists/{list_id:int}/rename", rename_list, methods=["POST"], role=EDITOR),
        web.page("/lists/{list_id:int}/delete", delete_list, methods=["POST"], role=EDITOR),
        web.page("/fields/{field_id:int}", update_field, methods=["POST"], role=EDITOR),
        web.page("/fields/{field_id:int}/delete", delete_field, methods=["POST"], role=EDITOR),
    ]
