"""The automation and action forms: what was posted as the services' input models, what the page
shows in each input (as stored, or as typed when a save was refused), and which input an error is
about, so a refused form comes back as typed with the error beside its input, once.
"""

from __future__ import annotations

import json
from typing import Any

from contactsync.automation.action_settings import Header, SyncActionSettings
from contactsync.automation.automations import AutomationIn
from contactsync.automation.rules import TRIGGERS
from contactsync.errors import ContactSyncError, TemplateError, ValidationError
from contactsync.web.forms import Problem, plain_error, typed_of
from contactsync.web.platform_pages import form_text


def automation_input(form: Any, *, list_id: int | None = None, status: str = "paused") -> AutomationIn:
    """The automation form as the service's input model (raises pydantic errors naming the field).

    The form never sets the status: a new automation is a draft (paused) until it is turned on after
    the confirmation that counts who matches; saving keeps the status it has."""
    trigger: dict[str, Any] = {"event": form_text(form, "trigger")}
    ref = form_text(form, "ref_id")
    if ref:
        trigger["ref_id"] = ref
    tfields = [f.strip() for f in form_text(form, "trigger_fields").split(",") if f.strip()]
    if tfields:
        trigger["fields"] = tfields
    raw_conditions = form_text(form, "conditions")
    try:
        conditions = json.loads(raw_conditions) if raw_conditions else None
    except ValueError as exc:
        raise ValidationError(f"the condition tree is not valid JSON ({exc})", field="conditions") from None
    reentry: dict[str, Any] = {"policy": form_text(form, "reentry") or "once"}
    if reentry["policy"] == "per_hours":
        reentry["hours"] = form_text(form, "reentry_hours") or None
    return AutomationIn.model_validate(
        {
            "list_id": list_id if list_id is not None else form_text(form, "list_id"),
            "name": form_text(form, "name"),
            "trigger": trigger,
            "conditions": conditions,
            "reentry": reentry,
            "status": status,
        }
    )


def automation_input_of(loc: list[str]) -> str:
    """The automation form's input an error location points at."""
    head = loc[0] if loc else ""
    if head == "trigger":
        return {"ref_id": "ref_id", "fields": "trigger_fields"}.get(loc[1] if len(loc) > 1 else "", "trigger")
    return head if head in {"name", "conditions", "reentry"} else ""


def action_input_of(loc: list[str]) -> str:
    """The action form's input an error location points at (a header's name or value: the headers box)."""
    head = loc[0] if loc else ""
    if head in ("name", "value"):  # a "Name: value" line the form could not make a header of
        return "headers"
    return head if head in ACTION_INPUTS else ""


ACTION_INPUTS = ("url", "method", "content_type", "sections", "max_items", "headers", "date_format",
                 "time_zone", "delay_s", "render", "ordered_per_contact")  # fmt: skip


def automation_values(a: Any, problem: Problem | None) -> dict[str, str]:
    """The automation form's inputs: as stored (a new one's defaults), or as typed when refused."""
    v = {"name": "", "trigger": TRIGGERS[0], "ref_id": "", "trigger_fields": "", "conditions": "",
         "reentry": "once", "reentry_hours": ""}  # fmt: skip
    if a is not None:
        v.update(
            name=a.name,
            trigger=a.trigger.event,
            ref_id="" if a.trigger.ref_id is None else str(a.trigger.ref_id),
            trigger_fields=",".join(str(f) for f in a.trigger.fields),
            conditions=json.dumps(a.conditions.model_dump(mode="json")) if a.conditions else "",
            reentry=a.reentry.policy,
            reentry_hours=str(a.reentry.hours or ""),
        )
    if problem is not None:
        v = {k: str(problem.value(k, old)) for k, old in v.items()}
    return v


def action_values(settings: SyncActionSettings, problem: Problem | None) -> dict[str, Any]:
    """The action form's inputs: as stored, or as typed when refused (sections as the ticked list)."""
    v: dict[str, Any] = {
        "url": settings.url,
        "method": settings.method,
        "content_type": settings.content_type,
        "sections": list(settings.sections),
        "max_items": str(settings.max_items),
        "headers": "".join(f"{h.name}: {h.value}\n" for h in settings.headers),
        "date_format": settings.date_format,
        "time_zone": settings.time_zone,
        "delay_s": str(settings.delay_s),
        "render": settings.render,
        "ordered_per_contact": settings.ordered_per_contact,
    }
    if problem is not None:
        typed = problem.typed
        v.update({k: typed[k] for k in v if k in typed and k not in ("sections", "ordered_per_contact")})
        ticked = typed.get("sections", [])
        v["sections"] = ticked if isinstance(ticked, list) else [ticked]
        v["ordered_per_contact"] = typed.get("ordered_per_contact") == "on"
    return v


def action_settings(form: Any, *, base: SyncActionSettings | None = None) -> SyncActionSettings:
    """The sync action form as settings; timeouts and schedule are kept from ``base``."""
    headers = []
    for line in form_text(form, "headers").splitlines():
        if line.strip():
            name, _, value = line.partition(":")
            headers.append(Header(name=name.strip(), value=value.strip()))
    data: dict[str, Any] = base.model_dump() if base is not None else {}
    data.update(
        name=form_text(form, "name"),
        url=form_text(form, "url"),
        method=form_text(form, "method") or "POST",
        content_type=form_text(form, "content_type") or "form",
        sections=[s for s in form.getlist("sections") if isinstance(s, str)],
        max_items=form_text(form, "max_items") or 100,
        headers=headers,
        date_format=form_text(form, "date_format") or "datetime",
        time_zone=form_text(form, "time_zone") or "UTC",
        ordered_per_contact=form_text(form, "ordered_per_contact") == "on",
        delay_s=form_text(form, "delay_s") or 0,
        render=form_text(form, "render") or data.get("render", "at_send"),
    )
    return SyncActionSettings.model_validate(data)


def template_problem(exc: ContactSyncError) -> dict[str, Any]:
    """A save-time error as JSON; template errors carry line, column, caret and suggestions."""
    cause = exc.__cause__ if isinstance(exc.__cause__, TemplateError) else exc
    if isinstance(cause, TemplateError):
        return {
            "message": cause.message,
            "line": cause.line,
            "column": cause.column,
            "caret": cause.caret(),
            "suggestions": list(cause.suggestions),
        }
    return {"message": str(exc), "field": getattr(exc, "field", "")}


def action_problem(exc: Exception, form: Any) -> Problem:
    """A refused action form: the error beside its input; a template's with its line, column and caret."""
    name, message = plain_error(exc, action_input_of)
    if isinstance(exc, ContactSyncError) and isinstance(exc.__cause__, TemplateError):
        t = exc.__cause__
        name, message = "url", f"line {t.line}, column {t.column}: {t.message}\n{t.caret()}"
    return Problem("action", message, name, typed_of(form))
