"""Database rows → :class:`SyncPayload` and shortcode context, for many contacts at once.

A constant number of queries per batch of contacts (never one per contact): each list section is
cut to ``max_items`` most-recent-first by a window function in SQL, so a contact with years of
activity costs the same as a new one. Dates are rendered in the action's time zone, as
``YYYY-MM-DD HH:MM:SS`` or ISO 8601.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pydantic_core
import sqlalchemy as sa

from contactsync.automation.predicate import DEFAULT_THRESHOLDS, Thresholds, lead_label
from contactsync.automation.snapshot import chunked
from contactsync.db.backend import Backend, backend_of
from contactsync.db.platform import activities, contacts, field_values, fields, lead_status_thresholds, lists
from contactsync.wire import phpform
from contactsync.wire.payload import SyncPayload

DateFormat = Literal["datetime", "iso8601"]

SECTION_KINDS = {
    "campaigns-opened": "campaign_open",
    "pages-visited": "page_visit",
    "automation-triggered": "automation",
    "goals-reached": "goal",
    "webhooks-triggered": "webhook",
    "lead-score": "lead_score",
}
"""List sections read from ``activities`` one row per item (links-clicked aggregates per url)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PayloadOptions:
    """What an action synchronizes and how it writes dates."""

    sections: tuple[str, ...]
    max_items: int = 100
    date_format: DateFormat = "datetime"
    time_zone: str = "UTC"
    public_base_url: str = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class Rendered:
    """One contact's payload (selected sections only) and its shortcode context.

    ``wire`` is the structure :meth:`SyncPayload.to_wire` gives (sections in wire order, missing
    numbers as ``""``), built straight from our own rows: encoding a body then costs no model objects.
    Numbers stay integers, which JSON keeps and the form encoder writes as PHP does (decimal text).
    """

    wire: dict[str, Any]
    context: dict[str, str]

    @property
    def transactionid(self) -> int:
        return int(self.wire["transactionid"])

    @property
    def payload(self) -> SyncPayload:
        """The validated model (for previews and tests; the outbox path encodes ``wire`` directly)."""
        return SyncPayload.from_wire(self.wire)

    def to_form(self) -> str:
        """Byte for byte :meth:`SyncPayload.to_form` of :attr:`payload`."""
        return phpform.encode(self.wire)

    def to_json(self) -> str:
        """Byte for byte :meth:`SyncPayload.to_json` of :attr:`payload`."""
        try:
            return pydantic_core.to_json(self.wire).decode("utf-8")
        except pydantic_core.PydanticSerializationError:
            return self.payload.to_json()  # text that is not UTF-8: the model's replacement rules


class _Dates:
    """Formats stored (naive UTC) times; a batch repeats many (an automation's entries share one)."""

    def __init__(self, fmt: DateFormat, tz: str) -> None:
        self.iso = fmt == "iso8601"
        self.tz = ZoneInfo(tz)
        self.seen: dict[datetime, str] = {}

    def __call__(self, value: datetime) -> str:
        text = self.seen.get(value)
        if text is None:
            local = value.replace(tzinfo=UTC).astimezone(self.tz)
            text = local.isoformat(timespec="seconds") if self.iso else local.strftime("%Y-%m-%d %H:%M:%S")
            self.seen[value] = text
        return text


_FIELDS = (
    sa.select(fields.c.id, fields.c.list_id, fields.c.name, fields.c.shortcode_key)
    .where(fields.c.list_id.in_(sa.bindparam("list_ids", expanding=True)))
    .order_by(fields.c.id)
)
_THRESHOLDS = (
    sa.select(
        lead_status_thresholds.c.account_id,
        lead_status_thresholds.c.min_score,
        lead_status_thresholds.c.label,
    )
    .where(lead_status_thresholds.c.account_id.in_(sa.bindparam("account_ids", expanding=True)))
    .order_by(lead_status_thresholds.c.account_id, lead_status_thresholds.c.min_score)
)


@dataclass(frozen=True, slots=True)
class _Statements:
    """The per-slice reads of :func:`build` for one database (built once: SQLAlchemy reuses their
    compiled form)."""

    contact_rows: sa.Select[Any]
    values: sa.Select[Any]
    recent: sa.Select[Any]
    clicks: sa.Select[Any]


@functools.cache
def _statements(backend: Backend) -> _Statements:
    return _Statements(
        contact_rows=(
            sa.select(
                contacts.c.id,
                contacts.c.list_id,
                contacts.c.email,
                contacts.c.phone,
                contacts.c.lead_score,
                contacts.c.created_at,
                lists.c.name.label("list_name"),
                lists.c.account_id,
            )
            .join(lists, lists.c.id == contacts.c.list_id)
            .where(backend.in_ids(contacts.c.id))
        ),
        values=sa.select(field_values.c.contact_id, field_values.c.field_id, field_values.c.value).where(
            backend.in_ids(field_values.c.contact_id)
        ),
        recent=_recent_statement(backend),
        clicks=_clicks_statement(backend),
    )


def _recent_statement(backend: Backend) -> sa.Select[Any]:
    rank = (
        sa.func.row_number()
        .over(
            partition_by=(activities.c.contact_id, activities.c.kind),
            order_by=(activities.c.occurred_at.desc(), activities.c.id.desc()),
        )
        .label("rank")
    )
    inner = (
        sa.select(
            activities.c.contact_id,
            activities.c.kind,
            activities.c.ref_id,
            activities.c.name,
            activities.c.url,
            activities.c.value,
            activities.c.occurred_at,
            rank,
        )
        .where(
            backend.in_ids(activities.c.contact_id),
            activities.c.kind.in_(sa.bindparam("kinds", expanding=True)),
        )
        .subquery()
    )
    return (
        sa.select(inner)
        .where(inner.c.rank <= sa.bindparam("max_items"))
        .order_by(inner.c.contact_id, inner.c.kind, inner.c.rank)
    )


def _clicks_statement(backend: Backend) -> sa.Select[Any]:
    last = sa.func.max(activities.c.occurred_at)
    return (
        sa.select(
            activities.c.contact_id, activities.c.url, sa.func.count().label("clicks"), last.label("last")
        )
        .where(backend.in_ids(activities.c.contact_id), activities.c.kind == "link_click")
        .group_by(activities.c.contact_id, activities.c.url)
        .order_by(activities.c.contact_id, last.desc(), activities.c.url)
    )


def build(
    conn: sa.Connection,
    contact_ids: Sequence[int],
    *,
    options: PayloadOptions,
    transactionids: Mapping[int, int],
) -> dict[int, Rendered]:
    """Payload and context of each contact, with ``transactionids[contact_id]`` as its transactionid.

    Per slice of ids: one query for the contacts, one for their field values, one per kind of
    section selected (recent activity, clicks), plus the field definitions and thresholds of the
    lists and accounts not seen yet. The statements are built once (expanding ``IN``), so SQLAlchemy
    reuses their compiled form.
    """
    out: dict[int, Rendered] = {}
    dates = _Dates(options.date_format, options.time_zone)
    wanted = set(options.sections)
    kinds = sorted(k for s, k in SECTION_KINDS.items() if s in wanted)
    thresholds_by_account: dict[int, Thresholds] = {}
    fields_by_list: dict[int, list[Any]] = {}
    backend = backend_of(conn)
    reads = _statements(backend)
    for part in chunked(list(contact_ids), backend.ids_per_statement):
        rows = conn.execute(reads.contact_rows, {"ids": part}).all()
        _load_definitions(conn, rows, fields_by_list, thresholds_by_account)
        values: dict[int, dict[int, str]] = defaultdict(dict)
        for cid, fid, value in conn.execute(reads.values, {"ids": part}):
            values[cid][fid] = value
        items: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        if kinds:
            params = {"ids": part, "kinds": kinds, "max_items": options.max_items}
            for r in conn.execute(reads.recent, params):
                items[r.contact_id][r.kind].append(r)
        clicks: dict[int, list[Any]] = defaultdict(list)
        if "links-clicked" in wanted:
            for r in conn.execute(reads.clicks, {"ids": part}):
                clicks[r.contact_id].append(r)
        for row in rows:
            out[row.id] = _one(
                row,
                fields_by_list[row.list_id],
                values[row.id],
                items.get(row.id, {}),
                clicks[row.id][: options.max_items],
                thresholds_by_account[row.account_id],
                transactionids[row.id],
                options,
                dates,
            )
    return out


def _load_definitions(
    conn: sa.Connection,
    rows: Sequence[Any],
    fields_by_list: dict[int, list[Any]],
    thresholds_by_account: dict[int, Thresholds],
) -> None:
    """Field definitions and lead-status thresholds of the rows' lists and accounts not loaded yet."""
    list_ids = sorted({r.list_id for r in rows}.difference(fields_by_list))
    if list_ids:
        for list_id in list_ids:
            fields_by_list[list_id] = []
        for f in conn.execute(_FIELDS, {"list_ids": list_ids}):
            fields_by_list[f.list_id].append(f)
    account_ids = sorted({r.account_id for r in rows}.difference(thresholds_by_account))
    if account_ids:
        levels: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for account_id, min_score, label in conn.execute(_THRESHOLDS, {"account_ids": account_ids}):
            levels[account_id].append((int(min_score), str(label)))
        for account_id in account_ids:
            thresholds_by_account[account_id] = tuple(levels[account_id]) or DEFAULT_THRESHOLDS


def _one(
    row: Any,
    defs: list[Any],
    values: dict[int, str],
    items: dict[str, list[Any]],
    clicks: list[Any],
    thresholds: Thresholds,
    tid: int,
    options: PayloadOptions,
    dates: _Dates,
) -> Rendered:
    profile_url = f"{options.public_base_url.rstrip('/')}/contacts/{row.id}"
    label = lead_label(row.lead_score, thresholds)
    get = items.get
    wanted = options.sections
    wire: dict[str, Any] = {
        "transactionid": str(tid),
        "contact": {"id": row.id, "email": row.email, "phone": row.phone, "profile_url": profile_url},
    }
    # only the selected sections are built (the rest are not sent), in wire order
    if "fields" in wanted:
        wire["fields"] = [
            {"id": f.id, "name": f.name, "value": values.get(f.id, "")} for f in defs[: options.max_items]
        ]
    if "campaigns-opened" in wanted:
        wire["campaigns-opened"] = [
            {"id": _num(r.ref_id), "name": r.name, "open_date": dates(r.occurred_at)}
            for r in get("campaign_open", [])
        ]
    if "links-clicked" in wanted:
        wire["links-clicked"] = [{"url": r.url, "clicks": r.clicks} for r in clicks]
    if "pages-visited" in wanted:
        wire["pages-visited"] = [
            {"page": r.url, "visit_date": dates(r.occurred_at)} for r in get("page_visit", [])
        ]
    if "automation-triggered" in wanted:
        wire["automation-triggered"] = [
            {"id": _num(r.ref_id), "name": r.name, "trigger_date": dates(r.occurred_at)}
            for r in get("automation", [])
        ]
    if "goals-reached" in wanted:
        wire["goals-reached"] = [
            {"id": _num(r.ref_id), "name": r.name, "reach_date": dates(r.occurred_at)}
            for r in get("goal", [])
        ]
    if "webhooks-triggered" in wanted:
        wire["webhooks-triggered"] = [
            {"id": _num(r.ref_id), "name": r.name, "trigger_date": dates(r.occurred_at)}
            for r in get("webhook", [])
        ]
    if "lead-score" in wanted:
        wire["lead-score"] = [
            {"id": _num(r.ref_id), "name": r.name, "score": _num(r.value), "score_date": dates(r.occurred_at)}
            for r in get("lead_score", [])
        ]
    if "lead-status" in wanted:
        wire["lead-status"] = {"score": row.lead_score, "label": label}
    context = {
        "ID": str(row.id),
        "EMAIL": row.email,
        "PHONE": row.phone,
        "PROFILE_URL": profile_url,
        "TRANSACTIONID": str(tid),
        "LIST_ID": str(row.list_id),
        "LIST_NAME": row.list_name,
        "LEAD_SCORE": str(row.lead_score),
        "LEAD_STATUS": label,
        "CREATED_AT": row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for f in defs:
        value = values.get(f.id, "")
        context[f.shortcode_key.upper()] = value
        context[f"FIELD_{f.id}"] = value
    return Rendered(wire, context)


def _num(value: int | None) -> int | str:
    """A number as the wire carries it: missing is ``""``."""
    return "" if value is None else value
