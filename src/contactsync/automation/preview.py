"""Preview: the exact request an action would send for a chosen contact, with size and PHP warnings.

Nothing is written: the request is rendered as the event path would freeze it (a fresh
transactionid, the headers of "now"), so what the owner sees is what the listener gets — except the
signature, which only a test send computes: a signed request for a URL and body of the reader's
choosing is a forged webhook the customer's listener would accept, and a viewer may preview.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field

from contactsync.automation.action_settings import (
    SyncActionSettings,
    field_keys,
    renders_at_send,
    validate_settings,
)
from contactsync.automation.actions import account_of_automation, get_action, template_endpoint
from contactsync.automation.contacts import get_contact
from contactsync.automation.freezing import freeze_request, payload_options
from contactsync.automation.payload_builder import build
from contactsync.automation.runtime import Runtime
from contactsync.db.platform import actions, automations
from contactsync.db.sealing import is_sealed, mask
from contactsync.errors import ValidationError
from contactsync.shortcodes import MAX_URL_BYTES
from contactsync.wire import phpform, signing

UNSIGNED = "v1,(computed with the action's secret when the request is sent)"
MAX_INPUT_VARS = 1000
MAX_NESTING = 64


class Preview(BaseModel):
    method: str
    url: str
    headers: dict[str, str]
    body: str = Field(description="the body as text (form bodies are ASCII, JSON is UTF-8)")
    size_bytes: int = Field(description="body bytes (POST) or URL bytes (GET)")
    url_bytes: int
    php_variables: int = Field(description="variables PHP counts in the form body or GET query")
    php_max_nesting: int
    warnings: list[str]
    render: Literal["immediately", "at_send", "at_trigger"] = Field(
        description="when URL and body are rendered: at once (no delay), when the delay ends from the "
        "contact's data as it is then (at_send), or as at the trigger (at_trigger)"
    )
    render_words: str = Field(description="the same, in words")


def preview(
    conn: sa.Connection,
    rt: Runtime,
    action_id: int,
    contact_id: int,
    *,
    settings: SyncActionSettings | None = None,
    reveal: bool = False,
) -> Preview:
    """Render the request for ``contact_id``; ``settings`` previews unsaved edits of the action.

    Extra header values are credentials: masked hints unless ``reveal`` (a test send needs them); the
    signature is computed only with ``reveal``. Unsaved settings that move the action to another
    endpoint may not carry its stored credentials there."""
    action = get_action(conn, action_id)
    stored_endpoint = action.endpoint
    if settings is not None:
        action = action.model_copy(update={"settings": settings})
    list_id, automation_name = conn.execute(
        sa.select(automations.c.list_id, automations.c.name).where(automations.c.id == action.automation_id)
    ).one()
    contact = get_contact(conn, contact_id)
    if contact.list_id != list_id:
        raise ValidationError(f"contact {contact_id} is not in the automation's list", field="contact_id")
    template = validate_settings(
        action.settings, field_keys(conn, list_id), country_code=rt.default_country_code
    )
    if settings is not None and template_endpoint(template) != stored_endpoint:
        for header in settings.headers:
            if is_sealed(header.value):  # a stored value kept by its hint
                raise ValidationError(
                    f"header {header.name}: enter its value again; a stored credential is not sent to a new "
                    "endpoint",
                    field="headers",
                )
    now = rt.clock()
    tid = rt.ids.next()
    rendered = build(
        conn, [contact_id], options=payload_options(action.settings, rt), transactionids={contact_id: tid}
    )
    request = freeze_request(
        action,
        template,
        rendered[contact_id],
        automation_id=action.automation_id,
        contact_id=contact_id,
        now=now,
        account_id=account_of_automation(conn, action.automation_id),
        automation_name=automation_name,
    )
    extra = {k: rt.keyring.open(v) for k, v in request.headers.items()}
    own = {h.name for h in action.settings.headers}  # credentials; the sender headers are not
    headers = {
        "User-Agent": rt.user_agent,
        **(extra if reveal else {k: mask(v) if k in own else v for k, v in extra.items()}),
    }
    if request.method == "POST":
        headers["Content-Type"] = request.content_type
        signed: bytes | str = request.body
    else:
        signed = signing.request_target(request.url)
    timestamp = int(now.replace(tzinfo=UTC).timestamp())
    if reveal:
        keys = [rt.keyring.open(s) for s in _secrets(conn, action_id, now)]
        headers.update(signing.headers(keys, msg_id=str(tid), timestamp=timestamp, content=signed))
    else:
        headers.update(
            {
                signing.HEADER_ID: str(tid),
                signing.HEADER_TIMESTAMP: str(timestamp),
                signing.HEADER_SIGNATURE: UNSIGNED,
            }
        )
    url_bytes = len(request.url.encode("utf-8"))
    warnings = list(template.warnings(request.url))
    if request.method == "POST" and action.settings.content_type == "form":
        stats = phpform.measure(request.body, source="post")
    else:
        query = request.url.split("?", 1)[1].split("#", 1)[0] if "?" in request.url else ""
        stats = phpform.measure(query, source="get")
    if stats.variables > MAX_INPUT_VARS:
        warnings.append(
            f"{stats.variables} PHP variables: a default PHP listener keeps {MAX_INPUT_VARS} "
            "(max_input_vars) and drops the rest; lower max_items, select fewer sections, or send JSON"
        )
    if stats.max_nesting > MAX_NESTING:
        warnings.append(f"nesting {stats.max_nesting} is over PHP's max_input_nesting_level ({MAX_NESTING})")
    if url_bytes > MAX_URL_BYTES and not any("URL" in w for w in warnings):
        warnings.append(f"the URL is {url_bytes} bytes; many servers reject URLs over {MAX_URL_BYTES} bytes")
    render, render_words = when_rendered(action.settings)
    return Preview(
        render=render,
        render_words=render_words,
        method=request.method,
        url=request.url,
        headers=headers,
        body=request.body.decode("utf-8", "replace"),
        size_bytes=len(request.body) if request.method == "POST" else url_bytes,
        url_bytes=url_bytes,
        php_variables=stats.variables,
        php_max_nesting=stats.max_nesting,
        warnings=warnings,
    )


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


def when_rendered(
    settings: SyncActionSettings,
) -> tuple[Literal["immediately", "at_send", "at_trigger"], str]:
    """Which data a delivery of this action carries, for the preview (automation/send_time.py)."""
    if settings.delay_s <= 0:
        return "immediately", "sent at once: this is the request as it goes"
    after = _duration(settings.delay_s)
    if renders_at_send(settings):
        return "at_send", (
            f"sent {after} after the trigger, rendered when the delay ends from the contact's data as it "
            "is then (shown here as it is now); the transactionid is fixed at the trigger"
        )
    return (
        "at_trigger",
        f"sent {after} after the trigger, as at the trigger: the contact's data when it entered",
    )


def _secrets(conn: sa.Connection, action_id: int, now: datetime) -> list[str]:
    """The signing keys in force: the secret, plus the previous one until it expires."""
    row = conn.execute(
        sa.select(actions.c.secret, actions.c.previous_secret, actions.c.previous_secret_expires_at).where(
            actions.c.id == action_id
        )
    ).one()
    keys = [row.secret]
    if (
        row.previous_secret
        and row.previous_secret_expires_at is not None
        and row.previous_secret_expires_at > now
    ):
        keys.append(row.previous_secret)
    return keys
