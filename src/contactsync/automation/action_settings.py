"""The sync action's settings: automation.md's table, checked on save so nothing can fail at send time.

pydantic checks each value; :func:`validate_settings` checks what it cannot — the URL template is
compiled against the list's fields (errors carry line/column), and headers, sections and the time
zone are checked — so that only the network can fail once a delivery is queued.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from contactsync import shortcodes
from contactsync.automation.lists import list_fields
from contactsync.automation.payload_builder import DateFormat
from contactsync.db import sealing
from contactsync.errors import TemplateError, ValidationError
from contactsync.wire import sender
from contactsync.wire.payload import SECTIONS

DEFAULT_RETRY_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
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


def renders_at_send(settings: SyncActionSettings) -> bool:
    """Whether a delivery of this action is rendered again from the contact's data when its delay
    ends (automation/send_time.py): only a delayed action that did not ask for the trigger's snapshot."""
    return settings.delay_s > 0 and settings.render == "at_send"
