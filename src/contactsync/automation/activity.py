"""Marketing activity: the event models and their batched insertion.

A batch is checked whole before anything is written (every contact must exist), then written with
one multi-row INSERT plus one lead-score update per touched contact, in the caller's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal, Union

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contactsync.automation.rules import Int64
from contactsync.db.bulk import insert_rows
from contactsync.db.platform import activities, contacts
from contactsync.errors import NotFoundError


class _Event(BaseModel):
    """Whose activity: ``contact_id``, or ``list_id`` + ``email``. ``occurred_at`` defaults to now."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    contact_id: Int64 | None = None
    list_id: Int64 | None = None
    email: str | None = Field(default=None, max_length=320)
    occurred_at: datetime | None = None

    @model_validator(mode="after")
    def _who(self) -> _Event:
        if self.contact_id is None and (self.list_id is None or self.email is None):
            raise ValueError("give contact_id, or list_id and email")
        return self


class CampaignOpened(_Event):
    kind: Literal["campaign.opened"]
    campaign_id: Int64
    campaign_name: str = Field(default="", max_length=500)


class LinkClicked(_Event):
    kind: Literal["link.clicked"]
    url: str = Field(min_length=1, max_length=8192)


class PageVisited(_Event):
    kind: Literal["page.visited"]
    url: str = Field(min_length=1, max_length=8192)


class GoalReached(_Event):
    kind: Literal["goal.reached"]
    goal_id: Int64
    goal_name: str = Field(default="", max_length=500)


class WebhookTriggered(_Event):
    kind: Literal["webhook.triggered"]
    webhook_id: Int64
    webhook_name: str = Field(default="", max_length=500)


class LeadScored(_Event):
    kind: Literal["lead_score.changed"]
    score_id: Int64
    name: str = Field(default="", max_length=500)
    value: int = Field(ge=-1_000_000, le=1_000_000)


Event = Annotated[
    Union[CampaignOpened, LinkClicked, PageVisited, GoalReached, WebhookTriggered, LeadScored],  # noqa: UP007
    Field(discriminator="kind"),
]
"""One activity event, as the events API and importers deliver it; ``kind`` is the trigger name."""


def _row(event: Event, contact_id: int, now: datetime) -> dict[str, object]:
    at = event.occurred_at or now
    if at.tzinfo is not None:
        offset = at.utcoffset()
        assert offset is not None
        at = (at - offset).replace(tzinfo=None)
    base: dict[str, object] = {
        "contact_id": contact_id,
        "occurred_at": at,
        "ref_id": None,
        "name": "",
        "url": "",
        "value": None,
    }
    if isinstance(event, CampaignOpened):
        return {**base, "kind": "campaign_open", "ref_id": event.campaign_id, "name": event.campaign_name}
    if isinstance(event, LinkClicked):
        return {**base, "kind": "link_click", "url": event.url}
    if isinstance(event, PageVisited):
        return {**base, "kind": "page_visit", "url": event.url}
    if isinstance(event, GoalReached):
        return {**base, "kind": "goal", "ref_id": event.goal_id, "name": event.goal_name}
    if isinstance(event, WebhookTriggered):
        return {**base, "kind": "webhook", "ref_id": event.webhook_id, "name": event.webhook_name}
    return {**base, "kind": "lead_score", "ref_id": event.score_id, "name": event.name, "value": event.value}


def resolve_contacts(conn: sa.Connection, events: Sequence[Event], *, path: str = "events") -> list[int]:
    """The contact id of each event (two queries per batch); NotFoundError names the first bad one."""
    by_id = sorted({e.contact_id for e in events if e.contact_id is not None})
    known: dict[int, int] = {}  # contact id -> list id
    for start in range(0, len(by_id), 500):
        part = by_id[start : start + 500]
        known.update(
            conn.execute(sa.select(contacts.c.id, contacts.c.list_id).where(contacts.c.id.in_(part))).all()
        )
    wanted = {(e.list_id, e.email.lower()) for e in events if e.contact_id is None and e.email is not None}
    by_email: dict[tuple[int, str], int] = {}
    pairs = sorted((lst, key) for lst, key in wanted if lst is not None)
    for start in range(0, len(pairs), 250):
        some = pairs[start : start + 250]
        rows = conn.execute(
            sa.select(contacts.c.id, contacts.c.list_id, contacts.c.email_key).where(
                sa.tuple_(contacts.c.list_id, contacts.c.email_key).in_(some)
            )
        )
        by_email.update({(lst, key): cid for cid, lst, key in rows})
    out: list[int] = []
    for i, e in enumerate(events):
        if e.contact_id is not None:
            if e.contact_id not in known:
                raise NotFoundError(f"contact {e.contact_id} does not exist", field=f"{path}[{i}].contact_id")
            out.append(e.contact_id)
            continue
        assert e.list_id is not None
        assert e.email is not None
        found = by_email.get((e.list_id, e.email.lower()))
        if found is None:
            raise NotFoundError(
                f"no contact with email {e.email!r} in list {e.list_id}", field=f"{path}[{i}].email"
            )
        out.append(found)
    return out


def insert_activities(
    conn: sa.Connection, events: Sequence[Event], contact_ids: Sequence[int], *, now: datetime
) -> None:
    """Write the events' activity rows and add lead-score entries to the contacts' totals."""
    if not events:
        return
    conn.execute(activities.insert(), [_row(e, cid, now) for e, cid in zip(events, contact_ids, strict=True)])
    deltas: dict[int, int] = defaultdict(int)
    for e, cid in zip(events, contact_ids, strict=True):
        if isinstance(e, LeadScored):
            deltas[cid] += e.value
    if deltas:
        conn.execute(
            contacts.update()
            .where(contacts.c.id == sa.bindparam("cid"))
            .values(lead_score=contacts.c.lead_score + sa.bindparam("delta"), updated_at=now),
            [{"cid": cid, "delta": d} for cid, d in sorted(deltas.items())],
        )


def record_entries(conn: sa.Connection, rows: Sequence[tuple[int, int, str]], *, now: datetime) -> None:
    """ "Automation triggered" activity for ``(contact_id, automation_id, automation_name)`` rows."""
    insert_rows(
        conn,
        activities,
        [
            {
                "contact_id": cid,
                "kind": "automation",
                "ref_id": aid,
                "name": name,
                "url": "",
                "value": None,
                "occurred_at": now,
            }
            for cid, aid, name in rows
        ],
    )
