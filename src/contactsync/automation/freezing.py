"""Freezing: the exact request a delivery sends, written to the outbox with it.

Method, URL, static headers, body and transactionid are fixed when the delivery is queued (or,
for a delayed action that renders at send time, when its delay ends); the dispatcher only signs
and sends what was frozen.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from contactsync import shortcodes
from contactsync.automation.action_settings import SyncActionSettings, renders_at_send
from contactsync.automation.actions import ActionOut
from contactsync.automation.payload_builder import PayloadOptions, Rendered
from contactsync.automation.runtime import Runtime
from contactsync.delivery.outbox import OutboxRequest
from contactsync.wire import sender

FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json; charset=utf-8"


def payload_options(settings: SyncActionSettings, rt: Runtime) -> PayloadOptions:
    """What the payload builder needs from the action (GET sends no body: no sections to load)."""
    return PayloadOptions(
        sections=tuple(settings.sections) if settings.method == "POST" else (),
        max_items=settings.max_items,
        date_format=settings.date_format,
        time_zone=settings.time_zone,
        public_base_url=rt.public_base_url,
    )


class Freezer:
    """Frozen requests of one action for many contacts: the constant parts are prepared once.

    The transactionid is the first key of every body (wire.md), so a payload encoded with a
    placeholder id becomes any delivery's body by replacing that leading key: one encoding per
    contact, whatever the number of deliveries, and no copy of the payload model per delivery.
    """

    __slots__ = (
        "_account_id", "_action", "_at_send", "_headers", "_json", "_not_before", "_ordered", "_post",
        "_template", "_url_tid",
    )  # fmt: skip

    def __init__(
        self,
        action: ActionOut,
        template: shortcodes.Template,
        *,
        now: datetime,
        account_id: int,
        automation_name: str = "",
    ) -> None:
        s = action.settings
        self._account_id = account_id
        self._action = action
        self._template = template
        self._post = s.method == "POST"
        self._json = s.content_type == "json"
        # the sender headers (wire/sender.py) are the action's: computed here, once per action
        self._headers = {h.name: h.value for h in s.headers} | sender.headers(
            action.id, automation_name, s.name
        )
        self._ordered = s.ordered_per_contact
        self._not_before = now + timedelta(seconds=s.delay_s) if s.delay_s else None
        self._at_send = renders_at_send(s)
        self._url_tid = "TRANSACTIONID" in template.fields

    def body(self, rendered: Rendered) -> tuple[bytes, str]:
        """The encoded body of ``rendered`` (with its own transactionid) and its content type."""
        if not self._post:
            return b"", ""
        if self._json:
            return rendered.to_json().encode("utf-8"), JSON_TYPE
        return rendered.to_form().encode("latin-1"), FORM_TYPE

    def request(
        self,
        rendered: Rendered,
        *,
        transactionid: int,
        body: tuple[bytes, str] | None = None,
        automation_id: int | None,
        contact_id: int | None,
        now: datetime,
    ) -> OutboxRequest:
        """The request for one delivery: ``rendered`` stamped with ``transactionid``.

        ``body`` is :meth:`body` of ``rendered``, when the caller encodes it once for several
        deliveries.
        """
        placeholder = rendered.transactionid
        content, content_type = self.body(rendered) if body is None else body
        if content and transactionid != placeholder:
            content = _splice(content, placeholder, transactionid, json=self._json)
        context = rendered.context
        if self._url_tid and transactionid != placeholder:
            context = {**context, "TRANSACTIONID": str(transactionid)}
        action = self._action
        return OutboxRequest(
            transactionid=transactionid,
            account_id=self._account_id,
            endpoint=action.endpoint,
            method="POST" if self._post else "GET",
            url=self._template.render(context, now=now),
            body=content,
            content_type=content_type,
            headers=self._headers,
            action_id=action.id,
            automation_id=automation_id,
            contact_id=contact_id,
            ordering_key=f"{action.id}:{contact_id}" if self._ordered and contact_id is not None else None,
            not_before=self._not_before,
            render_at_send=self._at_send,
        )


def _splice(body: bytes, old: int, new: int, *, json: bool) -> bytes:
    head = b'{"transactionid":"' if json else b"transactionid="
    was = head + str(old).encode("ascii")
    if not body.startswith(was) or body[len(was) : len(was) + 1] not in (b'"', b"&", b""):
        raise AssertionError("the transactionid is not the first key of the body")
    return head + str(new).encode("ascii") + body[len(was) :]


def freeze_request(
    action: ActionOut,
    template: shortcodes.Template,
    rendered: Rendered,
    *,
    automation_id: int | None,
    contact_id: int | None,
    now: datetime,
    account_id: int,
    automation_name: str = "",
) -> OutboxRequest:
    """The exact request for one contact, as the outbox stores it (its payload's transactionid)."""
    freezer = Freezer(action, template, now=now, account_id=account_id, automation_name=automation_name)
    return freezer.request(
        rendered,
        transactionid=rendered.transactionid,
        automation_id=automation_id,
        contact_id=contact_id,
        now=now,
    )
