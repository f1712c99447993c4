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
from contactsync.automation.rules import ActivityCondition, Condition, walk
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


def load_views(
    conn: sa.Connection,
    ids: Sequence[int],
    *,
    kinds: Collection[str],
    since: datetime | None = None,
    with_fields: bool = True,
) -> dict[int, ContactView]:
    """Snapshots of the contacts ``ids`` (missing ids are absent from the result).

    Only activity of ``kinds`` is loaded, and only from ``since`` on when given.
    """
    views: dict[int, ContactView] = {}
    for part in chunked(list(ids)):
        rows = conn.execute(
            sa.select(
                contacts.c.id, contacts.c.email, contacts.c.phone, contacts.c.status, contacts.c.lead_score
            ).where(contacts.c.id.in_(part))
        )
        for r in rows:
            views[r.id] = ContactView(r.id, r.email, r.phone, r.status, r.lead_score)
        if with_fields:
            values = conn.execute(
                sa.select(
                    field_values.c.contact_id,
                    field_values.c.field_id,
                    field_values.c.value,
                    field_values.c.value_num,
                ).where(field_values.c.contact_id.in_(part))
            )
            for contact_id, field_id, value, num in values:
                views[contact_id].values[field_id] = (value, num)
        if kinds:
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
    return views
