"""Manual runs on purpose, and deleting an automation: every step that sends in bulk shows its count first.

"Run over the list" first shows the dry run (contacts matching now, how many re-entry lets in, a
sample) and starts only once confirmed. "Resend to everyone who matches now" ignores re-entry — people
who already went through get the data again — so it shows its own count next to a normal run's and
needs its own explicit confirmation; it is audited as ``run.resend``. A run's page follows its progress
and says whether it ignores re-entry. Deleting an automation says how many pending deliveries it
cancels (they could not be signed without its actions) and needs a confirmation too.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.api.deps import own_automation
from contactsync.automation.automations import (
    AutomationIn,
    AutomationOut,
    delete_automation,
    get_automation,
    update_automation,
)
from contactsync.automation.explain import DryRun, dry_run
from contactsync.automation.manual import ManualRunOut, get_run, run_to_completion, start_run
from contactsync.db.platform import actions, contacts, manual_runs
from contactsync.errors import ContactSyncError, NotFoundError, RunInProgressError
from contactsync.web.app import Web
from contactsync.web.automation_pages import runtime_of, wake
from contactsync.web.confirm import Ask, ask, confirmed
from contactsync.web.platform_pages import EDITOR, VIEWER, error_message, form_text, utcnow
from contactsync.web.security import Session
from contactsync.web.words import TRIGGER_WORDS

RUNNING_REFRESH_S = 2
"""A running run's page reloads itself this often."""


def own_run(conn: sa.Connection, account_id: int, run_id: int) -> ManualRunOut:
    """The run, when it is the account's (NotFoundError otherwise, like a missing one)."""
    mine = conn.execute(
        sa.select(manual_runs.c.id).where(manual_runs.c.id == run_id, manual_runs.c.account_id == account_id)
    ).first()
    if mine is None:
        raise NotFoundError(f"manual run {run_id} does not exist", field="run_id")
    return get_run(conn, run_id)


def turn_on_question(a: AutomationOut, dry: DryRun, acts: int) -> Ask:
    """What turning ``a`` on means, with how many of its list's contacts match now."""
    people = "contact matches" if dry.matching == 1 else "contacts match"
    who = "contact who matches" if dry.matching == 1 else "contacts who match"
    says = [
        f"{dry.matching} of the list's {dry.total} contacts {'matches' if dry.matching == 1 else 'match'} "
        "its conditions now.",
        "Turning it on sends nothing now: from now on it runs for each contact who matches when "
        f"{TRIGGER_WORDS.get(a.trigger.event, a.trigger.event)}."
        if a.trigger.event != "manual"
        else "Its trigger is manual: once on, it runs when you run it over the list.",
        f"To send to the {dry.matching} {who} now, run it over the list once it is on.",
    ]
    if not acts:
        says.append("It has no action yet: nothing is sent until you add one.")
    return Ask(
        title=f"Turn on {a.name!r}?",
        says=tuple(says),
        action=f"/automations/{a.id}/status",
        fields={"status": "active"},
        button=f"Turn on ({dry.matching} {people} now)",
        back=f"/automations/{a.id}",
    )


def routes(web: Web) -> list[BaseRoute]:
    def process(run_id: int) -> None:
        pool = web.wiring.run_workers  # the API process's run threads, when mounted there
        if pool is not None:
            pool.ensure(run_id)
            return
        rt = runtime_of(web)

        def work() -> None:
            run_to_completion(web.engine, rt, run_id, on_progress=lambda _run: wake(web))

        threading.Thread(target=work, name=f"manual-run-{run_id}", daemon=True).start()

    async def confirm_page(request: Request, session: Session, *, resend: bool) -> Response:
        automation_id = int(request.path_params["automation_id"])
        caller = session.who.principal
        rt = runtime_of(web)

        def load(conn: sa.Connection) -> dict[str, Any]:
            own_automation(conn, caller, automation_id)
            automation = get_automation(conn, automation_id)
            counted: DryRun = dry_run(conn, rt, automation_id, ignore_reentry=resend)
            normal = dry_run(conn, rt, automation_id) if resend else counted
            sample = conn.execute(
                sa.select(contacts.c.id, contacts.c.email)
                .where(contacts.c.id.in_(counted.sample))
                .order_by(contacts.c.id)
            ).all()
            return {"a": automation, "dry": counted, "normal": normal, "sample": sample}

        data = await web.read(load)
        return web.render(request, session, "platform/run_confirm.html", resend=resend, **data)

    async def run_page(request: Request, session: Session) -> Response:
        return await confirm_page(request, session, resend=False)

    async def resend_page(request: Request, session: Session) -> Response:
        return await confirm_page(request, session, resend=True)

    async def start(request: Request, session: Session, *, resend: bool) -> Response:
        automation_id = int(request.path_params["automation_id"])
        form = await request.form()
        who = session.who
        await web.read(lambda conn: own_automation(conn, who.principal, automation_id))
        back = f"/automations/{automation_id}/{'resend' if resend else 'run'}"
        if form_text(form, "confirm") != "yes":
            return web.redirect(request, back, err="tick the box to confirm, then start")
        rt = runtime_of(web)

        def begin(conn: sa.Connection) -> ManualRunOut:
            own_automation(conn, who.principal, automation_id)
            run = start_run(conn, rt, automation_id, ignore_reentry=resend)
            action = "run.resend" if resend else "run.start"
            who.record(conn, action, "run", run.id, now=utcnow(), automation_id=automation_id)
            return run

        try:
            started = await web.write(begin)
        except RunInProgressError as exc:
            process(exc.run_id)  # resumes it, should the server that started it have stopped
            return web.redirect(request, f"/runs/{exc.run_id}", err=str(exc))
        except NotFoundError:
            raise
        except ContactSyncError as exc:
            return web.redirect(request, back, err=error_message(exc))
        process(started.id)
        kind = "resend (ignoring re-entry)" if resend else "manual run"
        return web.redirect(request, f"/runs/{started.id}", msg=f"{kind} {started.id} started")

    async def run_start(request: Request, session: Session) -> Response:
        return await start(request, session, resend=False)

    async def resend_start(request: Request, session: Session) -> Response:
        return await start(request, session, resend=True)

    async def progress(request: Request, session: Session) -> Response:
        run_id = int(request.path_params["run_id"])
        account_id = session.who.principal.account_id

        def load(conn: sa.Connection) -> tuple[ManualRunOut, AutomationOut]:
            run = own_run(conn, account_id, run_id)
            return run, get_automation(conn, run.automation_id)

        run, automation = await web.read(load)
        if run.state == "running":
            process_if_orphaned = web.wiring.run_workers
            if process_if_orphaned is not None:
                process_if_orphaned.ensure(run.id)  # no-op while this process works on it
        return web.render(
            request, session, "platform/run.html", run=run, a=automation, refresh_s=RUNNING_REFRESH_S
        )

    async def remove(request: Request, session: Session) -> Response:
        automation_id = int(request.path_params["automation_id"])
        form = await request.form()
        who = session.who

        def current(conn: sa.Connection) -> AutomationOut:
            own_automation(conn, who.principal, automation_id)
            return get_automation(conn, automation_id)

        found = await web.read(current)
        if form_text(form, "confirm") != "yes":
            return web.redirect(
                request, f"/automations/{automation_id}", err="tick the box to confirm the deletion"
            )
        rt = runtime_of(web)

        def work(conn: sa.Connection) -> int:
            own_automation(conn, who.principal, automation_id)
            cancelled = delete_automation(conn, automation_id, now=rt.clock())
            who.record(conn, "automation.delete", "automation", automation_id, now=utcnow(),
                       name=found.name, cancelled=cancelled)  # fmt: skip
            return cancelled

        cancelled = await web.write(work)
        note = f"automation {found.name!r} deleted; {cancelled} pending deliveries cancelled"
        return web.redirect(request, "/automations", msg=note)

    async def switch(request: Request, session: Session) -> Response:
        """Turn an automation on (after a page that counts who matches now) or off (at once)."""
        automation_id = int(request.path_params["automation_id"])
        form = await request.form()
        wanted = form_text(form, "status")
        who = session.who
        rt = runtime_of(web)
        if wanted not in ("active", "paused"):
            return web.redirect(request, f"/automations/{automation_id}", err="turn it on or off")

        def counted(conn: sa.Connection) -> tuple[AutomationOut, DryRun, int]:
            own_automation(conn, who.principal, automation_id)
            acts = conn.execute(
                sa.select(sa.func.count()).where(actions.c.automation_id == automation_id)
            ).scalar_one()
            return get_automation(conn, automation_id), dry_run(conn, rt, automation_id), int(acts)

        found, dry, acts = await web.read(counted)
        if wanted == "active" and not confirmed(form):
            return ask(web, request, session, turn_on_question(found, dry, acts))

        def work(conn: sa.Connection) -> None:
            own_automation(conn, who.principal, automation_id)
            current = get_automation(conn, automation_id)
            data = AutomationIn.model_validate(current.model_dump(include=set(AutomationIn.model_fields)))
            update_automation(conn, rt, automation_id, data.model_copy(update={"status": wanted}))
            event = "automation.turn_on" if wanted == "active" else "automation.turn_off"
            who.record(conn, event, "automation", automation_id, now=utcnow(), matching=dry.matching)

        await web.write(work)
        note = "automation turned on" if wanted == "active" else "automation turned off: nothing triggers it"
        return web.redirect(request, f"/automations/{automation_id}", msg=note)

    return [
        web.page("/automations/{automation_id:int}/status", switch, methods=["POST"], role=EDITOR),
        web.page("/automations/{automation_id:int}/run", run_page, role=EDITOR),
        web.page("/automations/{automation_id:int}/run", run_start, methods=["POST"], role=EDITOR),
        web.page("/automations/{automation_id:int}/resend", resend_page, role=EDITOR),
        web.page("/automations/{automation_id:int}/resend", resend_start, methods=["POST"], role=EDITOR),
        web.page("/automations/{automation_id:int}/delete", remove, methods=["POST"], role=EDITOR),
        web.page("/runs/{run_id:int}", progress, role=VIEWER),
    ]
