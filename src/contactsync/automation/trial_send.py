"""Test send: one real, signed attempt of an action's request for one contact, now.

The request is the preview's (:mod:`contactsync.automation.preview`), signed and with its
credentials in clear; it goes out once through the dispatcher's network guard
(:func:`~contactsync.delivery.attempt.send_once`) and is neither queued, retried nor recorded as a
delivery. What came back is answered with the outcome's word and hint, and the request shown masks
the action's header values again. The API and the action page both test through here (each checks
ownership and audits the test its own way).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from contactsync.automation.action_settings import SyncActionSettings
from contactsync.automation.actions import get_action
from contactsync.automation.preview import Preview, preview
from contactsync.automation.runtime import Runtime
from contactsync.db.sealing import mask
from contactsync.delivery.attempt import AttemptResult, outcome_label, send_once
from contactsync.delivery.hints import hint
from contactsync.delivery.netguard import NetPolicy

GUARD_S = 5.0
"""How long past the action's own timeout a test send may take before it counts as timed out."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """The request to test, signed and with its credentials in clear (never shown as is), and the
    settings it was rendered with."""

    request: Preview
    settings: SyncActionSettings


@dataclass(frozen=True, slots=True)
class Sent:
    """What a test send did: the request as shown (credentials masked) and what came back."""

    request: Preview
    result: AttemptResult
    outcome: str
    """:func:`~contactsync.delivery.attempt.outcome_label` of ``result``."""
    body: str
    """The response body as text (UTF-8, lossy), at most the attempt's cap."""
    hint: str
    """What the outcome means and what to do, in words (delivery/hints.py)."""


def prepare_test(
    conn: sa.Connection,
    rt: Runtime,
    action_id: int,
    contact_id: int,
    *,
    settings: SyncActionSettings | None = None,
) -> Prepared:
    """The request the action sends for ``contact_id`` now (``settings``: unsaved edits instead of
    the stored settings), signed with its secret(s)."""
    request = preview(conn, rt, action_id, contact_id, settings=settings, reveal=True)
    return Prepared(request, settings if settings is not None else get_action(conn, action_id).settings)


async def send_test(prepared: Prepared, *, policy: NetPolicy, panel: str = "this page") -> Sent:
    """Send ``prepared`` once now, with the action's timeouts; ``panel`` says, to whoever reads the
    hint, where the action's "Connect your listener" panel is."""
    request, settings = prepared.request, prepared.settings
    result = await send_once(
        method=request.method,
        url=request.url,
        headers=request.headers,
        body=request.body.encode("utf-8") if request.method == "POST" else None,
        policy=policy,
        connect_timeout_s=settings.connect_timeout_s,
        total_timeout_s=settings.timeout_s,
        guard_s=settings.timeout_s + GUARD_S,
    )
    text = result.body.decode("utf-8", "replace")
    secret = {h.name for h in settings.headers}  # credentials: shown masked, like every read
    shown = {k: mask(v) if k in secret else v for k, v in request.headers.items()}
    return Sent(
        request=request.model_copy(update={"headers": shown}),
        result=result,
        outcome=outcome_label(result),
        body=text,
        hint=hint(result.status, result.error, detail=result.detail, body=text, panel=panel),
    )
