"""Database rows → :class:`SyncPayload` and shortcode context, for many contacts at once.

A constant number of queries per batch of contacts: each list section is cut to ``max_items``
most-recent-first by a window function in SQL, so a contact with years of activity costs the same
as a new one. Dates are rendered in the action's time zone, as ``YYYY-MM-DD HH:MM:SS`` or ISO 8601.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from contactsync.automation.lists import get_thresholds
from contactsync.automation.predicate import lead_label
from contactsync.automation.snapshot import chunked
from contactsync.db.platform import activities, contacts, field_values, fields, lists
from contactsync.wire.payload import (
    AutomationTrigger,
    CampaignOpen,
    Contact,
    FieldValue,
    GoalReach,
    LeadScoreEntry,
    LeadStatus,
    LinkClick,
    PageVisit,
    SyncPayload,
    WebhookTrigger,
)

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
    """One contact's payload (selected sections only) and its shortcode context."""

    payload: SyncPayload
    context: dict[str, str]


class _Dates:
    def __init__(self, fmt: DateFormat, tz: str) -> None:
        self.iso = fmt == "iso8601"
        self.tz = ZoneInfo(tz)

    def __call__(self, value: datetime) -> str:
        local = value.replace(tzinfo=UTC).astimezone(self.tz)
        return local.isoformat(timespec="seconds") if self.iso else local.strftime("%Y-%m-%d %H:%M:%S")


def _recent(conn: sa.Connection, ids: Sequence[int], kinds: list[str], max_items: int) -> list[Any]:
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
        .where(activities.c.contact_id.in_(ids), activities.c.kind.in_(kinds))
        .subquery()
    )
    query = (
        sa.select(inner)
        .where(inner.c.rank <= max_items)
        .order_by(inner.c.contact_id, inner.c.kind, inner.c.rank)
    )
    return list(conn.execute(query))


def _clicks(conn: sa.Connection, ids: Sequence[int]) -> list[Any]:
    last = sa.func.max(activities.c.occurred_at)
    query = (
        sa.select(
            activities.c.contact_id, activities.c.url, sa.func.count().label("clicks"), last.label("last")
        )
        .where(activities.c.contact_id.in_(ids), activities.c.kind == "link_click")
        .group_by(activities.c.contact_id, activities.c.url)
        .order_by(activities.c.contact_id, last.desc(), activities.c.url)
    )
    return list(conn.execute(query))


def build(
    conn: sa.Connection,
    contact_ids: Sequence[int],
    *,
    options: PayloadOptions,
    transactionids: Mapping[int, int],
) -> dict[int, Rendered]:
    """Payload and context of each contact, with ``transactionids[contact_id]`` as its transactionid."""
    out: dict[int, Rendered] = {}
    dates = _Dates(options.date_format, options.time_zone)
    wanted = set(options.sections)
    kinds = sorted(k for s, k in SECTION_KINDS.items() if s in wanted)
    thresholds_by_account: dict[int, Any] = {}
    fields_by_list: dict[int, list[Any]] = {}
    for part in chunked(list(contact_ids)):
        rows = conn.execute(
            sa.select(contacts, lists.c.name.label("list_name"), lists.c.account_id)
            .join(lists, lists.c.id == contacts.c.list_id)
            .where(contacts.c.id.in_(part))
        ).all()
        values: dict[int, dict[int, str]] = defaultdict(dict)
        for cid, fid, value in conn.execute(
            sa.select(field_values.c.contact_id, field_values.c.field_id, field_values.c.value).where(
                field_values.c.contact_id.in_(part)
            )
        ):
            values[cid][fid] = value
        items: dict[tuple[int, str], list[Any]] = defaultdict(list)
        if kinds:
            for r in _recent(conn, part, kinds, options.max_items):
                items[(r.contact_id, r.kind)].append(r)
        clicks: dict[int, list[Any]] = defaultdict(list)
        if "links-clicked" in wanted:
            for r in _clicks(conn, part):
                clicks[r.contact_id].append(r)
        for row in rows:
            if row.list_id not in fields_by_list:
                fields_by_list[row.list_id] = list(
                    conn.execute(
                        sa.select(fields).where(fields.c.list_id == row.list_id).order_by(fields.c.id)
                    )
                )
            if row.account_id not in thresholds_by_account:
                thresholds_by_account[row.account_id] = get_thresholds(conn, row.account_id)
            out[row.id] = _one(
                row,
                fields_by_list[row.list_id],
                values[row.id],
                {k: items[(row.id, k)] for k in kinds},
                clicks[row.id][: options.max_items],
                thresholds_by_account[row.account_id],
                transactionids[row.id],
                options,
                dates,
            )
    return out


def _one(
    row: Any,
    defs: list[Any],
    values: dict[int, str],
    items: dict[str, list[Any]],
    clicks: list[Any],
    thresholds: Any,
    tid: int,
    options: PayloadOptions,
    dates: _Dates,
) -> Rendered:
    profile_url = f"{options.public_base_url.rstrip('/')}/contacts/{row.id}"
    label = lead_label(row.lead_score, thresholds)
    get = items.get
    wanted = options.sections
    # only the selected sections are built (the rest stay None: not sent)
    sections: dict[str, Any] = {}
    if "fields" in wanted:
        sections["fields"] = [
            FieldValue(id=f.id, name=f.name, value=values.get(f.id, "")) for f in defs[: options.max_items]
        ]
    if "campaigns-opened" in wanted:
        sections["campaigns_opened"] = [
            CampaignOpen(id=r.ref_id, name=r.name, open_date=dates(r.occurred_at))
            for r in get("campaign_open", [])
        ]
    if "links-clicked" in wanted:
        sections["links_clicked"] = [LinkClick(url=r.url, clicks=r.clicks) for r in clicks]
    if "pages-visited" in wanted:
        sections["pages_visited"] = [
            PageVisit(page=r.url, visit_date=dates(r.occurred_at)) for r in get("page_visit", [])
        ]
    if "automation-triggered" in wanted:
        sections["automation_triggered"] = [
            AutomationTrigger(id=r.ref_id, name=r.name, trigger_date=dates(r.occurred_at))
            for r in get("automation", [])
        ]
    if "goals-reached" in wanted:
        sections["goals_reached"] = [
            GoalReach(id=r.ref_id, name=r.name, reach_date=dates(r.occurred_at)) for r in get("goal", [])
        ]
    if "webhooks-triggered" in wanted:
        sections["webhooks_triggered"] = [
            WebhookTrigger(id=r.ref_id, name=r.name, trigger_date=dates(r.occurred_at))
            for r in get("webhook", [])
        ]
    if "lead-score" in wanted:
        sections["lead_score"] = [
            LeadScoreEntry(id=r.ref_id, name=r.name, score=r.value, score_date=dates(r.occurred_at))
            for r in get("lead_score", [])
        ]
    if "lead-status" in wanted:
        sections["lead_status"] = LeadStatus(score=row.lead_score, label=label)
    contact = Contact(id=row.id, email=row.email, phone=row.phone, profile_url=profile_url)
    payload = SyncPayload(transactionid=tid, contact=contact, **sections)
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
    return Rendered(payload, context)
