"""The "Sync Contact to Third Party" action: settings, validation on save, secrets, requests, preview.

Settings are exactly automation.md's table. Saving compiles the URL template against the list's
fields (errors carry line/column), so nothing can fail at send time except the network. The
request written to the outbox is frozen here: method, URL, static headers, body, transactionid.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from contactsync import shortcodes
from contactsync.automation.lists import list_fields
from contactsync.automation.payload_builder import DateFormat, PayloadOptions, Rendered
from contactsync.automation.runtime import IssuedSecret, Runtime
from contactsync.db import sealing
from contactsync.db.platform import actions, automations, lists
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery.interventions import cancel_for_actions
from contactsync.delivery.outbox import OutboxRequest
from contactsync.errors import NotFoundError, TemplateError, ValidationError
from contactsync.wire import sender
from contactsync.wire.payload import SECTIONS
from contactsync.wire.signing import generate_secret

DEFAULT_RETRY_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
SECRET_OVERLAP = timedelta(hours=24)
FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json; charset=utf-8"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
RESERVED_HEADERS = frozenset(
    {"host", "content-type", "content-length", "user-agent", "transfer-encoding", "connection"}
)
"""Headers the dispatcher owns; ``webhook-*`` are reserved too."""


MAX_HEADER_VALUE = 4096


class Header(BaseModel):
    """An extra request header; its value is a credential more often than not, so it is sealed at rest
    and shown as a masked hint (sending a hint back unchanged keeps the stored value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    value: str = Field(max_length=2 * MAX_HEADER_VALUE, description=f"at most {MAX_HEADER_VALUE} characters")

    @field_validator("value")
    @classmethod
    def _length(cls, value: str) -> str:
        if len(value) > MAX_HEADER_VALUE and not sealing.is_sealed(value):  # sealed: as stored
            raise ValueError(f"at most {MAX_HEADER_VALUE} characters")
        return value


class SyncActionSettings(BaseModel):
    """Every setting of the action (automation.md); defaults as delivery.md and wire.md fix them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        default="", max_length=200, description="what people call the action (pages show it, not its id)"
    )
    url: str = Field(min_length=1, max_length=65536, description="URL template (shortcodes.md)")
    method: Literal["POST", "GET"] = "POST"
    content_type: Literal["form", "json"] = "form"
    sections: list[str] = Field(default_factory=lambda: list(SECTIONS))
    max_items: int = Field(default=100, ge=1, le=10_000)
    headers: list[Header] = Field(default_factory=list, max_length=50)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)
    timeout_s: float = Field(default=15.0, gt=0, le=300)
    retry_schedule_s: list[float] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE_S), min_length=1
    )
    ordered_per_contact: bool = False
    date_format: DateFormat = "datetime"
    time_zone: str = "UTC"
    delay_s: int = Field(default=0, ge=0, le=30 * 86400)
    render: Literal["at_send", "at_trigger"] = Field(
        default="at_send",
        description="with a delay: send the contact's data as it is when the delay ends (at_send), or "
        "as it was when the automation triggered (at_trigger); the transactionid is fixed at the trigger",
    )

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule(cls, value: list[float]) -> list[float]:
        if len(value) > 50 or any(not 0 <= d <= 7 * 86400 for d in value):
            raise ValueError("at most 50 delays, each 0 s to 7 days")
        return value


def action_label(name: str, url: str, action_id: int | None) -> str:
    """An action as people read it: its name, else where it sends ("to crm.example"), else its id."""
    if name.strip():
        return name.strip()
    host = urlsplit(url.split("[#", 1)[0]).hostname if "://" in url else None
    return f"to {host}" if host else f"action {action_id}"


def stored_label(settings: Mapping[str, Any] | None, action_id: int | None) -> str:
    """:func:`action_label` of an action's stored settings (a row's JSON, not yet validated)."""
    stored = settings or {}
    return action_label(str(stored.get("name", "")), str(stored.get("url", "")), action_id)


class ActionOut(BaseModel):
    id: int
    automation_id: int
    settings: SyncActionSettings
    secret: str
    previous_secret_expires_at: datetime | None
    endpoint: str
    created_at: datetime
    updated_at: datetime
    warnings: list[str] = Field(default_factory=list, description="what a default PHP listener would lose")


ITEM_VARIABLES = {
    "fields": 3,
    "campaigns-opened": 3,
    "links-clicked": 2,
    "pages-visited": 2,
    "automation-triggered": 3,
    "goals-reached": 3,
    "webhooks-triggered": 3,
    "lead-score": 4,
}
"""PHP variables per item of each list section (lead-status adds 2, transactionid + contact 5)."""
PHP_MAX_INPUT_VARS = 1000


def worst_case_variables(settings: SyncActionSettings, n_fields: int) -> int:
    """The most PHP variables a form body of this action can have (every section full)."""
    if settings.method != "POST" or settings.content_type != "form":
        return 0
    total = 5 + (2 if "lead-status" in settings.sections else 0)
    for section, per_item in ITEM_VARIABLES.items():
        if section in settings.sections:
            items = n_fields if section == "fields" else settings.max_items
            total += per_item * items
    return total


def capacity_warnings(settings: SyncActionSettings, n_fields: int) -> list[str]:
    """Save-time warning when full sections would exceed PHP's default ``max_input_vars``."""
    worst = worst_case_variables(settings, n_fields)
    if worst <= PHP_MAX_INPUT_VARS:
        return []
    return [
        f"a contact with full sections produces up to {worst} PHP variables; a default PHP listener "
        f"keeps {PHP_MAX_INPUT_VARS} and silently drops the rest: lower max_items, select fewer sections, "
        "or send JSON"
    ]


def endpoint_of(url: str) -> str:
    """``scheme://host:port`` of a URL (default ports made explicit): the unit of endpoint health."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


@functools.lru_cache(maxsize=512)
def _compile_url(url: str, keys: tuple[str, ...], country_code: str) -> shortcodes.Template:
    # compiled templates are immutable: processes evaluating the same actions batch after batch reuse them
    return shortcodes.compile(url, fields=keys, default_country_code=country_code)


def validate_settings(
    settings: SyncActionSettings, field_keys: Sequence[str], *, country_code: str = "1"
) -> shortcodes.Template:
    """Check what pydantic cannot (template, scheme, sections, headers, zone); return the compiled URL."""
    scheme = settings.url.split(":", 1)[0].lower()
    if scheme not in {"http", "https"}:
        raise ValidationError(f"only http and https URLs are allowed, got {scheme!r}", field="url")
    try:
        template = _compile_url(settings.url, tuple(field_keys), country_code)
    except TemplateError as exc:
        hint = f" (did you mean {', '.join(exc.suggestions)}?)" if exc.suggestions else ""
        message = f"url: line {exc.line}, column {exc.column}: {exc.message}{hint}"
        raise ValidationError(message, field="url") from exc
    unknown = sorted(set(settings.sections).difference(SECTIONS))
    if unknown:
        raise ValidationError(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}", field="sections")
    if settings.method == "GET" and settings.content_type == "json":
        raise ValidationError("a JSON body needs POST; GET sends the data in the URL", field="content_type")
    for i, h in enumerate(settings.headers):
        if not _TOKEN.match(h.name):
            raise ValidationError(f"{h.name!r} is not a valid header name", field=f"headers[{i}].name")
        lowered = h.name.lower()
        if lowered in RESERVED_HEADERS or lowered.startswith(("webhook-", sender.PREFIX)):
            raise ValidationError(f"header {h.name!r} is set by the dispatcher", field=f"headers[{i}].name")
        if any(ch in h.value for ch in "\r\n\0"):
            raise ValidationError("header values cannot contain CR, LF or NUL", field=f"headers[{i}].value")
    try:
        ZoneInfo(settings.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {settings.time_zone!r}", field="time_zone") from None
    return template


def field_keys(conn: sa.Connection, list_id: int) -> list[str]:
    """Shortcode keys a template of this list may use: the fields' keys and ``FIELD_<id>``."""
    defs = list_fields(conn, list_id)
    return [f.shortcode_key for f in defs] + [f"FIELD_{f.id}" for f in defs]


def _list_of_automation(conn: sa.Connection, automation_id: int) -> int:
    found = conn.execute(sa.select(automations.c.list_id).where(automations.c.id == automation_id)).scalar()
    if found is None:
        raise NotFoundError(f"automation {automation_id} does not exist", field="automation_id")
    return int(found)


def account_of_automation(conn: sa.Connection, automation_id: int) -> int:
    """The account owning ``automation_id`` (through its list)."""
    found = conn.execute(
        sa.select(lists.c.account_id)
        .join(automations, automations.c.list_id == lists.c.id)
        .where(automations.c.id == automation_id)
    ).scalar()
    if found is None:
        raise NotFoundError(f"automation {automation_id} does not exist", field="automation_id")
    return int(found)


def _touch_endpoint(conn: sa.Connection, automation_id: int, endpoint: str, now: datetime) -> None:
    key = endpoint_rows.EndpointKey(account_of_automation(conn, automation_id), endpoint)
    endpoint_rows.mark_edited(conn, key, now=now)


def _endpoint_for(template: shortcodes.Template, settings: SyncActionSettings) -> str:
    # scheme, host and port are literal text in a valid template: render with an empty context
    return endpoint_of(template.render({}, now=datetime(2020, 1, 1)))


def stored_settings(
    settings: SyncActionSettings, keyring: sealing.Keyring, *, current: Sequence[Header] = ()
) -> dict[str, Any]:
    """The settings as stored: header values sealed. A value equal to the masked hint of the stored
    value of the same header (what a read returned) keeps that stored value."""
    merged = with_stored_values(settings, current, keyring)
    data = settings.model_dump(mode="json")
    data["headers"] = [
        {"name": given.name, "value": kept.value if kept.value != given.value else keyring.seal(given.value)}
        for given, kept in zip(settings.headers, merged.headers, strict=True)
    ]
    return data


def with_stored_values(
    settings: SyncActionSettings, current: Sequence[Header], keyring: sealing.Keyring
) -> SyncActionSettings:
    """``settings`` whose header values that are the masked hint of the same header's stored value
    (what a read showed), or that stored value itself, are that stored, sealed value; the others are
    as given."""
    stored = {h.name.lower(): h.value for h in current}
    headers = []
    for h in settings.headers:
        kept = stored.get(h.name.lower())
        same = kept is not None and h.value in (kept, keyring.hint(kept))
        headers.append(h.model_copy(update={"value": kept}) if same else h)
    return settings.model_copy(update={"headers": headers})


def shown(action: ActionOut, keyring: sealing.Keyring) -> ActionOut:
    """The action as an ordinary read shows it: the secret and header values as masked hints."""
    headers = [h.model_copy(update={"value": keyring.hint(h.value)}) for h in action.settings.headers]
    return action.model_copy(
        update={
            "secret": keyring.hint(action.secret),
            "settings": action.settings.model_copy(update={"headers": headers}),
        }
    )


class Revealed(BaseModel):
    """An action's credentials in clear: only an explicit reveal returns this."""

    secret: str
    previous_secret: str | None = Field(description="still signing alongside until it expires")
    previous_secret_expires_at: datetime | None
    headers: list[Header]


def reveal(conn: sa.Connection, keyring: sealing.Keyring, action_id: int, *, now: datetime) -> Revealed:
    """The action's signing secret(s) and header values, opened."""
    row = conn.execute(sa.select(actions).where(actions.c.id == action_id)).first()
    if row is None:
        raise NotFoundError(f"action {action_id} does not exist", field="action_id")
    previous = row.previous_secret
    in_force = previous and (row.previous_secret_expires_at is None or row.previous_secret_expires_at > now)
    return Revealed(
        secret=keyring.open(row.secret),
        previous_secret=keyring.open(previous) if in_force else None,
        previous_secret_expires_at=row.previous_secret_expires_at if in_force else None,
        headers=[
            Header(name=h["name"], value=keyring.open(h["value"]))
            for h in (row.settings or {}).get("headers", [])
        ],
    )


def create_action(
    conn: sa.Connection, rt: Runtime, *, automation_id: int, settings: SyncActionSettings
) -> ActionOut:
    """Validate and store a new action with a fresh secret."""
    list_id = _list_of_automation(conn, automation_id)
    template = validate_settings(settings, field_keys(conn, list_id), country_code=rt.default_country_code)
    now = rt.clock()
    endpoint = _endpoint_for(template, settings)
    secret = generate_secret()
    action_id = conn.execute(
        actions.insert()
        .values(
            automation_id=automation_id,
            kind="sync_contact",
            settings=stored_settings(settings, rt.keyring),
            secret=rt.keyring.seal(secret),
            endpoint=endpoint,
            created_at=now,
            updated_at=now,
        )
        .returning(actions.c.id)
    ).scalar_one()
    _touch_endpoint(conn, automation_id, endpoint, now)
    _issued(conn, rt, automation_id, int(action_id), secret, settings.name)
    return get_action(conn, int(action_id))


def _issued(
    conn: sa.Connection, rt: Runtime, automation_id: int, action_id: int, secret: str, action_name: str
) -> None:
    """Tell :attr:`Runtime.on_secret`, if set, about an action's new secret."""
    if rt.on_secret is None:
        return
    row = conn.execute(
        sa.select(lists.c.account_id, automations.c.name)
        .join(lists, lists.c.id == automations.c.list_id)
        .where(automations.c.id == automation_id)
    ).one()
    rt.on_secret(
        IssuedSecret(int(row.account_id), automation_id, str(row.name), action_id, secret, action_name)
    )


def update_action(
    conn: sa.Connection, rt: Runtime, action_id: int, settings: SyncActionSettings
) -> ActionOut:
    """Replace the settings (validated like on create); the secret is kept."""
    current = get_action(conn, action_id)
    list_id = _list_of_automation(conn, current.automation_id)
    template = validate_settings(settings, field_keys(conn, list_id), country_code=rt.default_country_code)
    now = rt.clock()
    endpoint = _endpoint_for(template, settings)
    if endpoint != current.endpoint:
        _no_credentials_to(endpoint, settings, current.settings.headers, rt.keyring)
    conn.execute(
        actions.update()
        .where(actions.c.id == action_id)
        .values(
            settings=stored_settings(settings, rt.keyring, current=current.settings.headers),
            endpoint=endpoint,
            updated_at=now,
        )
    )
    _touch_endpoint(conn, current.automation_id, endpoint, now)
    return get_action(conn, action_id)


def _no_credentials_to(
    endpoint: str, settings: SyncActionSettings, current: Sequence[Header], keyring: sealing.Keyring
) -> None:
    """A stored header value (kept by sending back its masked hint) never follows the action to
    another endpoint: whoever moves it must type the credential in, which an editor who cannot
    reveal it does not know — otherwise moving the URL would hand the secret to any host."""
    kept = with_stored_values(settings, current, keyring)
    for given, merged in zip(settings.headers, kept.headers, strict=True):
        if merged.value is not given.value:
            raise ValidationError(
                f"header {given.name}: enter its value again; a stored credential is not sent to a new "
                f"endpoint ({endpoint})",
                field="headers",
            )


def get_action(conn: sa.Connection, action_id: int) -> ActionOut:
    row = conn.execute(sa.select(actions).where(actions.c.id == action_id)).first()
    if row is None:
        raise NotFoundError(f"action {action_id} does not exist", field="action_id")
    n_fields = len(field_keys(conn, _list_of_automation(conn, row.automation_id))) // 2
    return action_from_row(row, n_fields=n_fields)


def action_from_row(row: sa.Row[Any], *, n_fields: int) -> ActionOut:
    """An ``actions`` row as the service returns it (``n_fields``: the list's field count, for warnings)."""
    settings = SyncActionSettings.model_validate(row.settings)
    return ActionOut(
        warnings=capacity_warnings(settings, n_fields),
        id=row.id,
        automation_id=row.automation_id,
        settings=settings,
        secret=row.secret,
        previous_secret_expires_at=row.previous_secret_expires_at if row.previous_secret else None,
        endpoint=row.endpoint,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def list_actions(conn: sa.Connection, automation_id: int) -> list[ActionOut]:
    ids = conn.execute(
        sa.select(actions.c.id).where(actions.c.automation_id == automation_id).order_by(actions.c.id)
    ).scalars()
    return [get_action(conn, int(i)) for i in ids]


def delete_action(conn: sa.Connection, action_id: int, *, now: datetime) -> int:
    """Delete the action and cancel its pending deliveries (without it they cannot be signed);
    returns how many were cancelled."""
    cancelled = cancel_for_actions(conn, [action_id], now=now)
    if conn.execute(actions.delete().where(actions.c.id == action_id)).rowcount == 0:
        raise NotFoundError(f"action {action_id} does not exist", field="action_id")
    return cancelled


def rotate_secret(conn: sa.Connection, rt: Runtime, action_id: int) -> ActionOut:
    """New secret now; the old one keeps signing (second signature) for 24 hours."""
    current = get_action(conn, action_id)
    now = rt.clock()
    secret = generate_secret()
    conn.execute(
        actions.update()
        .where(actions.c.id == action_id)
        .values(
            secret=rt.keyring.seal(secret),
            previous_secret=current.secret,
            previous_secret_expires_at=now + SECRET_OVERLAP,
            updated_at=now,
        )
    )
    _issued(conn, rt, current.automation_id, action_id, secret, current.settings.name)
    return get_action(conn, action_id)


def payload_options(settings: SyncActionSettings, rt: Runtime) -> PayloadOptions:
    """What the payload builder needs from the action (GET sends no body: no sections to load)."""
    return PayloadOptions(
        sections=tuple(settings.sections) if settings.method == "POST" else (),
        max_items=settings.max_items,
        date_format=settings.date_format,
        time_zone=settings.time_zone,
        public_base_url=rt.public_base_url,
    )


def renders_at_send(settings: SyncActionSettings) -> bool:
    """Whether a delivery of this action is rendered again from the contact's data when its delay
    ends (automation/send_time.py): only a delayed action that did not ask for the trigger's snapshot."""
    return settings.delay_s > 0 and settings.render == "at_send"


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
