"""Automation pages: trigger, condition builder and re-entry; the sync action form with preview and test send.

Saving goes through the automation services (which validate everything); the JSON endpoints under
``/ui/`` back the form's live template validation, preview and test send. A test send is one real
attempt of the previewed request through the dispatcher's guarded connection pool, not recorded as
a delivery (but audited, as the API does). Every automation, action, list and contact named is
checked against the signed-in user's account first: another account's answers 404.

Each page is a handler of its own, given the app's :class:`~contactsync.web.app.Web`; :data:`PAGES` is
the route table :func:`routes` builds from them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from contactsync import shortcodes
from contactsync.api.deps import (
    account_lists,
    own_action,
    own_automation,
    own_contact,
    own_list,
)
from contactsync.automation.action_settings import SyncActionSettings, field_keys, validate_settings
from contactsync.automation.actions import (
    create_action,
    delete_action,
    get_action,
    list_actions,
    reveal,
    rotate_secret,
    shown,
    update_action,
    with_stored_values,
)
from contactsync.automation.automations import (
    AutomationIn,
    create_automation,
    get_automation,
    update_automation,
)
from contactsync.automation.lists import get_thresholds, list_fields
from contactsync.automation.manual import list_runs
from contactsync.automation.preview import preview
from contactsync.automation.runtime import Runtime
from contactsync.automation.trial_send import Prepared, prepare_test, send_test
from contactsync.db.counting import capped, matching, total
from contactsync.db.platform import actions, automations, contacts, deliveries, lists
from contactsync.delivery import trouble
from contactsync.delivery.interventions import pending_for_actions
from contactsync.delivery.netguard import NetPolicy
from contactsync.errors import ContactSyncError, NotFoundError
from contactsync.listener.getmap import advise
from contactsync.web import paging
from contactsync.web.app import Web
from contactsync.web.automation_forms import (
    action_problem,
    action_settings,
    action_values,
    automation_input,
    automation_input_of,
    automation_values,
    template_problem,
)
from contactsync.web.confirm import Ask, ask, confirmed
from contactsync.web.forms import Problem, plain_error, typed_of
from contactsync.web.platform_pages import EDITOR, OWNER, VIEWER, error_message, form_text, utcnow
from contactsync.web.security import Session
from contactsync.web.words import TRIGGER_WORDS, builder_data
from contactsync.wire.payload import SECTIONS
from contactsync.wire.sender import display_name


def runtime_of(web: Web) -> Runtime:
    """The services' runtime: the one the app was given, else one made once for this UI."""
    if web.wiring.runtime is None:
        web.wiring.runtime = Runtime.create(web.settings, engine=web.engine)
    return web.wiring.runtime


def wake(web: Web) -> None:
    """Tell an in-process dispatcher that deliveries were queued (it claims them at once)."""
    if web.wiring.on_enqueue is not None:
        web.wiring.on_enqueue()


def picker(conn: sa.Connection, list_id: int) -> dict[str, Any]:
    """What the shortcode picker offers for a list: built-in fields, the list's fields, every function."""
    return {
        "builtins": list(shortcodes.BUILTIN_FIELDS),
        "fields": [
            {"key": f.shortcode_key, "name": f.name, "type": f.type} for f in list_fields(conn, list_id)
        ],
        "functions": [
            {"name": f.name, "signature": f.signature, "doc": f.doc.splitlines()[0] if f.doc else ""}
            for f in shortcodes.FUNCTIONS.values()
        ],
    }


async def index(web: Web, request: Request, session: Session) -> Response:
    """The account's automations, newest first, each with a capped count of its deliveries."""
    account_id = session.who.principal.account_id
    at = paging.seek(request)

    def load(conn: sa.Connection) -> dict[str, Any]:
        a = automations.c
        mine = (
            sa.select(a.id, a.name, a.trigger, a.status, a.reentry, lists.c.name.label("list_name"))
            .join(lists, lists.c.id == a.list_id)
            .where(lists.c.account_id == account_id)
        )
        found = paging.window(
            lambda seek, n: conn.execute(paging.past(mine, a.id, seek, n)).all(), at, key=lambda r: r.id
        )
        shown = [r.id for r in found.rows]
        per: dict[int, int] = dict(
            conn.execute(
                sa.select(actions.c.automation_id, sa.func.count())
                .where(actions.c.automation_id.in_(shown))
                .group_by(actions.c.automation_id)
            ).all()
        )
        d = deliveries.c
        # ``shown`` are the account's own automations and a delivery carries its automation's id
        # (never reused), so that id alone names the account's deliveries: the count stays inside
        # the (automation_id, id) index instead of reading each row for its account
        sent = {i: capped(conn, matching(deliveries, d.automation_id == i, by=d.id)) for i in shown}
        all_lists = conn.execute(
            sa.select(lists.c.id, lists.c.name).where(lists.c.id.in_(account_lists(account_id)))
            .order_by(lists.c.id)
        ).all()  # fmt: skip
        health = trouble.health(conn, shown, account_id=account_id, now=utcnow())
        return {
            "rows": found.rows,
            "page": found,
            "actions": per,
            "sent": sent,
            "lists": all_lists,
            "health": health,
        }

    return web.render(
        request, session, "platform/automations.html", triggers=TRIGGER_WORDS, **await web.read(load)
    )


async def editor(
    web: Web,
    request: Request,
    session: Session,
    automation: Any,
    list_id: int,
    status: int = 200,
    problem: Problem | None = None,
) -> Response:
    account_id = session.who.principal.account_id

    def load(conn: sa.Connection) -> dict[str, Any]:
        acts = list_actions(conn, automation.id) if automation is not None else []
        runs = list_runs(conn, automation.id)[-5:] if automation is not None else []
        fields = list_fields(conn, list_id)
        pending = pending_for_actions(conn, [act.id for act in acts])
        health = None
        if automation is not None:
            health = trouble.health(conn, [automation.id], account_id=account_id, now=utcnow())
        lead_statuses = [label for _, label in get_thresholds(conn, account_id)]
        return {
            "health": health[automation.id] if health else None,
            "builder": builder_data([f.model_dump() for f in fields], lead_statuses),
            "acts": acts,
            "runs": runs,
            "pending": pending,
        }

    return web.render(
        request,
        session,
        "platform/automation.html",
        status,
        a=automation,
        list_id=list_id,
        triggers=TRIGGER_WORDS,
        v=automation_values(automation, problem),
        problem=problem,
        **await web.read(load),
    )


async def new(web: Web, request: Request, session: Session) -> Response:
    list_id = request.query_params.get("list", "")
    if not list_id.isdigit() or len(list_id) >= 19:
        return web.redirect(request, "/automations", err="choose a list for the new automation")
    caller = session.who.principal
    await web.read(lambda conn: own_list(conn, caller, int(list_id)))
    return await editor(web, request, session, None, int(list_id))


async def create(web: Web, request: Request, session: Session) -> Response:
    form = await request.form()
    who = session.who
    raw = form_text(form, "list_id")
    if raw.isdigit() and len(raw) < 19:  # another account's list answers 404, not a form error
        await web.read(lambda conn: own_list(conn, who.principal, int(raw)))

    def work(conn: sa.Connection, data: AutomationIn) -> Any:
        own_list(conn, who.principal, data.list_id)
        made = create_automation(conn, runtime_of(web), data)
        who.record(conn, "automation.create", "automation", made.id, now=utcnow(), name=made.name)
        return made

    if not (raw.isdigit() and len(raw) < 19):
        return web.redirect(request, "/automations", err="choose a list for the new automation")
    try:
        data = automation_input(form)
        out = await web.write(lambda conn: work(conn, data))
    except NotFoundError as exc:
        if exc.field == "list_id":
            raise
        return await refused(web, request, session, None, int(raw), exc, form)
    except (ContactSyncError, PydanticValidationError) as exc:
        return await refused(web, request, session, None, int(raw), exc, form)
    note = "automation created as a draft: it is off until you turn it on"
    return web.redirect(request, f"/automations/{out.id}", msg=note)


async def refused(
    web: Web, request: Request, session: Session, automation: Any, list_id: int, exc: Exception, form: Any
) -> Response:
    """The automation form again with what was typed, the error beside its input (422)."""
    name, message = plain_error(exc, automation_input_of)
    problem = Problem("automation", message, name, typed_of(form))
    return await editor(web, request, session, automation, list_id, 422, problem)


async def show(web: Web, request: Request, session: Session) -> Response:
    automation_id = int(request.path_params["automation_id"])
    caller = session.who.principal

    def load(conn: sa.Connection) -> Any:
        own_automation(conn, caller, automation_id)
        return get_automation(conn, automation_id)

    automation = await web.read(load)
    return await editor(web, request, session, automation, automation.list_id)


async def update(web: Web, request: Request, session: Session) -> Response:
    automation_id = int(request.path_params["automation_id"])
    form = await request.form()
    who = session.who

    def work(conn: sa.Connection, data: AutomationIn) -> None:
        own_automation(conn, who.principal, automation_id)
        saved = update_automation(conn, runtime_of(web), automation_id, data)
        who.record(conn, "automation.update", "automation", automation_id, now=utcnow(), name=saved.name)

    def load(conn: sa.Connection) -> Any:
        own_automation(conn, who.principal, automation_id)
        return get_automation(conn, automation_id)

    current = await web.read(load)
    try:
        data = automation_input(form, list_id=current.list_id, status=current.status)
        await web.write(lambda conn: work(conn, data))
    except NotFoundError as exc:
        if exc.field == "automation_id":
            raise
        return await refused(web, request, session, current, current.list_id, exc, form)
    except (ContactSyncError, PydanticValidationError) as exc:  # a condition's unknown field, too
        return await refused(web, request, session, current, current.list_id, exc, form)
    return web.redirect(request, f"/automations/{automation_id}", msg="automation saved")


async def action_form(
    web: Web,
    request: Request,
    session: Session,
    action: Any,
    automation_id: int,
    status: int = 200,
    problem: Problem | None = None,
) -> Response:
    caller = session.who.principal

    def load(conn: sa.Connection) -> dict[str, Any]:
        own_automation(conn, caller, automation_id)
        automation = get_automation(conn, automation_id)
        sample = conn.execute(
            sa.select(contacts.c.id, contacts.c.email).where(contacts.c.list_id == automation.list_id)
            .order_by(contacts.c.id).limit(50)
        ).all()  # fmt: skip
        field_ids = {f.shortcode_key: f.id for f in list_fields(conn, automation.list_id)}
        d = deliveries.c  # what deleting it cancels (pending_for_actions's states), counted up to a cap
        pending = total(
            capped(conn, matching(deliveries, d.action_id == action.id, d.state == state, by=d.created_at))
            for state in ("pending", "failed")
            if action is not None
        )
        return {
            "automation": automation,
            "picker": picker(conn, automation.list_id),
            "sample": sample,
            "field_ids": field_ids,
            "pending": pending,
        }

    data = await web.read(load)
    settings = action.settings if action is not None else SyncActionSettings(url="https://")
    field_ids = data.pop("field_ids")
    data["get_advice"] = advise(settings.url, field_ids) if settings.method == "GET" else None
    return web.render(
        request,
        session,
        "platform/action.html",
        status,
        action=action,
        s=settings,
        v=action_values(settings, problem),
        problem=problem,
        sections=SECTIONS,
        pairing_label=(
            display_name(action.id, data["automation"].name, action.settings.name)
            if action is not None
            else ""
        ),
        **data,
    )


async def action_new(web: Web, request: Request, session: Session) -> Response:
    return await action_form(web, request, session, None, int(request.path_params["automation_id"]))


async def action_create(web: Web, request: Request, session: Session) -> Response:
    automation_id = int(request.path_params["automation_id"])
    form = await request.form()
    who = session.who
    await web.read(lambda conn: own_automation(conn, who.principal, automation_id))

    def work(conn: sa.Connection, settings: SyncActionSettings) -> Any:
        own_automation(conn, who.principal, automation_id)
        made = create_action(conn, runtime_of(web), automation_id=automation_id, settings=settings)
        who.record(conn, "action.create", "action", made.id, now=utcnow(), automation_id=automation_id)
        return made

    try:
        settings = action_settings(form)
        out = await web.write(lambda conn: work(conn, settings))
    except NotFoundError:
        raise
    except (ContactSyncError, PydanticValidationError) as exc:
        problem = action_problem(exc, form)
        return await action_form(web, request, session, None, automation_id, 422, problem)
    return web.redirect(request, f"/actions/{out.id}", msg="action saved")


async def action_show(web: Web, request: Request, session: Session) -> Response:
    action_id = int(request.path_params["action_id"])
    action = await web.read(lambda conn: mine(conn, session, action_id))
    return await action_form(
        web, request, session, shown(action, runtime_of(web).keyring), action.automation_id
    )


async def action_reveal(web: Web, request: Request, session: Session) -> Response:
    """The secret(s) and header values in clear, for the page's Reveal button (POST with CSRF)."""
    action_id = int(request.path_params["action_id"])
    rt = runtime_of(web)
    who = session.who

    def work(conn: sa.Connection) -> Any:
        own_action(conn, who.principal, action_id)
        found = reveal(conn, rt.keyring, action_id, now=rt.clock())
        who.record(conn, "action.reveal", "action", action_id, now=utcnow())
        return found

    found = await web.write(work)
    return JSONResponse({"ok": True, **found.model_dump(mode="json")})


async def action_update(web: Web, request: Request, session: Session) -> Response:
    action_id = int(request.path_params["action_id"])
    form = await request.form()
    who = session.who
    current = await web.read(lambda conn: mine(conn, session, action_id))

    def work(conn: sa.Connection, settings: SyncActionSettings) -> None:
        own_action(conn, who.principal, action_id)
        update_action(conn, runtime_of(web), action_id, settings)
        who.record(conn, "action.update", "action", action_id, now=utcnow())

    try:
        settings = action_settings(form, base=current.settings)
        await web.write(lambda conn: work(conn, settings))
    except NotFoundError:
        raise
    except (ContactSyncError, PydanticValidationError) as exc:
        problem = action_problem(exc, form)
        shown_action = shown(current, runtime_of(web).keyring)
        return await action_form(web, request, session, shown_action, current.automation_id, 422, problem)
    return web.redirect(request, f"/actions/{action_id}", msg="action saved")


async def action_delete(web: Web, request: Request, session: Session) -> Response:
    """Delete after the owner confirmed the number of pending deliveries it cancels."""
    action_id = int(request.path_params["action_id"])
    form = await request.form()
    found = await web.read(lambda conn: mine(conn, session, action_id))
    if form_text(form, "confirm") != "yes":
        return web.redirect(request, f"/actions/{action_id}", err="tick the box to confirm the deletion")
    who = session.who
    rt = runtime_of(web)

    def work(conn: sa.Connection) -> int:
        own_action(conn, who.principal, action_id)
        cancelled = delete_action(conn, action_id, now=rt.clock())
        who.record(conn, "action.delete", "action", action_id, now=utcnow(), cancelled=cancelled)
        return cancelled

    try:
        cancelled = await web.write(work)
    except NotFoundError:
        raise
    except ContactSyncError as exc:
        return web.redirect(request, f"/actions/{action_id}", err=error_message(exc))
    note = f"action {action_id} deleted; {cancelled} pending deliveries cancelled (they could not be signed)"
    return web.redirect(request, f"/automations/{found.automation_id}", msg=note)


async def action_rotate(web: Web, request: Request, session: Session) -> Response:
    """Rotate after a confirmation that says how many pending deliveries the new secret signs."""
    action_id = int(request.path_params["action_id"])
    who = session.who
    form = await request.form()
    if not confirmed(form):

        def count(conn: sa.Connection) -> Any:
            own_action(conn, who.principal, action_id)
            d = deliveries.c
            where = (d.action_id == action_id, d.state == "pending")
            return capped(conn, matching(deliveries, *where, by=d.created_at))

        pending = await web.read(count)
        waiting = f"its {pending} pending deliver{'y' if pending == 1 else 'ies'}"
        question = Ask(
            title=f"Rotate the signing secret of action {action_id}?",
            says=(
                f"A new secret signs every request from now on, {waiting} included.",
                "The old secret stays valid for 24 hours: give the listener the new one before "
                "then, or it refuses this action's requests.",
            ),
            action=f"/actions/{action_id}/rotate",
            button="Rotate the secret",
            back=f"/actions/{action_id}",
        )
        return ask(web, request, session, question)

    def work(conn: sa.Connection) -> None:
        own_action(conn, who.principal, action_id)
        rotate_secret(conn, runtime_of(web), action_id)
        who.record(conn, "action.rotate_secret", "action", action_id, now=utcnow())

    await web.write(work)
    return web.redirect(
        request, f"/actions/{action_id}", msg="secret rotated; the old one stays valid for 24 hours"
    )


async def validate(web: Web, request: Request, session: Session) -> Response:
    body = await _json_body(request)
    raw = str(body.get("list_id") or 0)
    list_id = int(raw) if raw.isdigit() and len(raw) < 19 else 0
    template = str(body.get("url", ""))
    caller = session.who.principal

    def check(conn: sa.Connection) -> dict[str, Any]:
        own_list(conn, caller, list_id)
        try:
            validate_settings(SyncActionSettings(url=template or " "), field_keys(conn, list_id))
        except ContactSyncError as exc:
            return {"ok": False, "error": template_problem(exc)}
        return {"ok": True}

    return JSONResponse(await web.read(check))


async def preview_json(web: Web, request: Request, session: Session) -> Response:
    action_id = int(request.path_params["action_id"])
    form = await request.form()
    current = await web.read(lambda conn: mine(conn, session, action_id))
    caller = session.who.principal

    def render(conn: sa.Connection, contact_id: int, settings: SyncActionSettings) -> Any:
        own_contact(conn, caller, contact_id)
        return preview(conn, rt, action_id, contact_id, settings=settings)

    try:
        rt = runtime_of(web)
        contact_id, settings = _unsaved(form, current.settings, rt)
        rendered = await web.read(lambda conn: render(conn, contact_id, settings))
    except NotFoundError:
        raise
    except (ContactSyncError, ValueError) as exc:
        return _unusable(exc)
    return JSONResponse({"ok": True, "preview": rendered.model_dump()})


def _unsaved(form: Any, stored: SyncActionSettings, rt: Runtime) -> tuple[int, SyncActionSettings]:
    """The contact and the action's settings as typed on the page (credentials left blank: the stored)."""
    contact_id = int(form_text(form, "contact_id"))
    return contact_id, with_stored_values(action_settings(form, base=stored), stored.headers, rt.keyring)


def _unusable(exc: ContactSyncError | ValueError) -> JSONResponse:
    """Why the typed settings cannot be previewed or sent (422), in the page's words."""
    if isinstance(exc, ContactSyncError):
        return JSONResponse({"ok": False, "error": template_problem(exc)}, 422)
    return JSONResponse({"ok": False, "error": {"message": error_message(exc)}}, 422)


async def test_send(web: Web, request: Request, session: Session) -> Response:
    action_id = int(request.path_params["action_id"])
    form = await request.form()
    current = await web.read(lambda conn: mine(conn, session, action_id))
    who = session.who

    def prepare(conn: sa.Connection, contact_id: int, settings: SyncActionSettings) -> Prepared:
        own_contact(conn, who.principal, contact_id)
        made = prepare_test(conn, rt, action_id, contact_id, settings=settings)
        who.record(conn, "action.test_send", "action", action_id, now=utcnow(), contact_id=contact_id)
        return made

    try:
        rt = runtime_of(web)
        contact_id, settings = _unsaved(form, current.settings, rt)
        prepared = await web.write(lambda conn: prepare(conn, contact_id, settings))
    except NotFoundError:
        raise
    except (ContactSyncError, ValueError) as exc:
        return _unusable(exc)
    policy = web.wiring.net_policy
    if policy is None:
        policy = NetPolicy(
            allow_private_networks=web.settings.allow_private_networks,
            allowed_cidrs=tuple(web.settings.allowed_cidrs),
        )
    sent = await send_test(prepared, policy=policy)
    result = sent.result
    return JSONResponse(
        {
            "ok": True,
            "request": sent.request.model_dump(),
            "response": {
                "status": result.status,
                "error": result.detail or result.error,
                "headers": dict(result.headers),
                "body": sent.body,
                "duration_ms": round(result.duration_s * 1000, 1),
                "success": result.outcome.succeeded,
                "hint": sent.hint,
            },
        }
    )


PageHandler = Callable[[Web, Request, Session], Awaitable[Response]]

PAGES: tuple[tuple[str, PageHandler, tuple[str, ...], str], ...] = (
    ("/automations", index, ("GET",), VIEWER),
    ("/automations/new", new, ("GET",), EDITOR),
    ("/automations/new", create, ("POST",), EDITOR),
    ("/automations/{automation_id:int}", show, ("GET",), VIEWER),
    ("/automations/{automation_id:int}", update, ("POST",), EDITOR),
    ("/automations/{automation_id:int}/actions/new", action_new, ("GET",), EDITOR),
    ("/automations/{automation_id:int}/actions/new", action_create, ("POST",), EDITOR),
    ("/actions/{action_id:int}", action_show, ("GET",), VIEWER),
    ("/actions/{action_id:int}", action_update, ("POST",), EDITOR),
    ("/actions/{action_id:int}/rotate", action_rotate, ("POST",), EDITOR),
    ("/actions/{action_id:int}/delete", action_delete, ("POST",), EDITOR),
    ("/ui/actions/{action_id:int}/reveal", action_reveal, ("POST",), OWNER),
    ("/ui/validate", validate, ("POST",), VIEWER),
    ("/ui/actions/{action_id:int}/preview", preview_json, ("POST",), VIEWER),
    ("/ui/actions/{action_id:int}/test-send", test_send, ("POST",), EDITOR),
)
"""Path, handler, methods and the role it needs of every automation and action page."""


def routes(web: Web) -> list[BaseRoute]:
    """:data:`PAGES`, each handler given this app's ``web``."""
    return [
        web.page(path, partial(handler, web), methods=methods, role=role)
        for path, handler, methods, role in PAGES
    ]


def mine(conn: sa.Connection, session: Session, action_id: int) -> Any:
    """The action, when it is the signed-in user's account's (NotFoundError otherwise)."""
    own_action(conn, session.who.principal, action_id)
    return get_action(conn, action_id)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
