"""Load contacts into :class:`ContactView` snapshots for the Python predicate, in bulk.

Three queries per batch of contacts (contacts, field values, activity of the kinds the rules look
at), whatever the batch size, so the event path and the Python manual-run strategy cost a
constant number of round trips per batch.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from datetime import datetime

import sqlalchemy as sa

from contactsync.automation.predicate import ActivityRow, ContactView
from contactsync.automation.rules import ActivityCondition, Condition, FieldCondition, walk
from contactsync.db.platform import activities, contacts, field_values

IN_CHUNK = 500
"""Ids per ``IN (…)`` list: well below every database's bound-parameter limit."""


def chunked(ids: Sequence[int], size: int = IN_CHUNK) -> Iterator[Sequence[int]]:
    """Consecutive slices of at most ``size`` ids."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def activity_needs(nodes: Collection[Condition | None]) -> tuple[frozenset[str], int | None]:
    """Activity kinds the conditions look at, and the widest window in days (None: unbounded)."""
    kinds: set[str] = set()
    widest: int | None = 0
    for node in nodes:
        if node is None:
            continue
        for leaf in walk(node):
            if isinstance(leaf, ActivityCondition):
                kinds.add(leaf.kind)
                if leaf.within_days is None:
                    widest = None
                elif widest is not None:
                    widest = max(widest, leaf.within_days)
    return frozenset(kinds), (widest if kinds else 0)


def field_needs(nodes: Collection[Condition | None]) -> frozenset[int]:
    """Custom field ids the conditions compare."""
    return frozenset(
        leaf.field_id
        for node in nodes
        if node is not None
        for leaf in walk(node)
        if isinstance(leaf, FieldCondition) and leaf.field_id is not None
    )


def load_views(
    conn: sa.Connection,
    ids: Sequence[int],
    *,
    kinds: Collection[str],
    since: datetime | None = None,
    field_ids: Collection[int] | None = None,
) -> dict[int, ContactView]:
    """Snapshots of the contacts ``ids`` (missing ids are absent from the result).

    Only activity of ``kinds`` is loaded, and only from ``since`` on when given; only the values
    of ``field_ids`` when given (None: every field).
    """
    views = load_contacts(conn, ids, field_ids=field_ids)
    load_activities(conn, views, list(views), kinds=kinds, since=since)
    return views


def load_contacts(
    conn: sa.Connection, ids: Sequence[int], *, field_ids: Collection[int] | None = None
) -> dict[int, ContactView]:
    """Snapshots without activity: built-ins and the values of ``field_ids`` (None: every field).

    One query per slice of ids: contacts left-joined to their (wanted) field values.
    """
    views: dict[int, ContactView] = {}
    c, fv = contacts.c, field_values.c
    on = fv.contact_id == c.id
    if field_ids is not None:
        on = sa.and_(on, fv.field_id.in_(sorted(field_ids)) if field_ids else sa.false())
    base = sa.select(c.id, c.email, c.phone, c.status, c.lead_score, fv.field_id, fv.value, fv.value_num)
    base = base.select_from(contacts.outerjoin(field_values, on))
    for part in chunked(list(ids)):
        for cid, email, phone, status, score, field_id, value, num in conn.execute(
            base.where(c.id.in_(part))
        ):
            view = views.get(cid)
            if view is None:
                view = views[cid] = ContactView(cid, email, phone, status, score)
            if field_id is not None:
                view.values[field_id] = (value, num)
    return views


def load_activities(
    conn: sa.Connection,
    views: dict[int, ContactView],
    ids: Sequence[int],
    *,
    kinds: Collection[str],
    since: datetime | None = None,
) -> None:
    """Add the activity of ``kinds`` (from ``since`` on) of the contacts ``ids`` to their views."""
    if not kinds:
        return
    for part in chunked(list(ids)):
        query = sa.select(
            activities.c.contact_id,
            activities.c.kind,
            activities.c.ref_id,
            activities.c.url,
            activities.c.occurred_at,
        ).where(activities.c.contact_id.in_(part), activities.c.kind.in_(sorted(kinds)))
        if since is not None:
            query = query.where(activities.c.occurred_at >= since)
        for contact_id, kind, ref_id, url, at in conn.execute(query):
            views[contact_id].activities.append(ActivityRow(kind, ref_id, url, at))
