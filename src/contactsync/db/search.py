"""Contact search through an index on both databases: an email exactly or by its beginning, a phone exactly.

``LIKE '%q%'`` reads every contact of the lists searched. A prefix is a range instead,
``q <= email_key < q + U+10FFFF`` (the highest code point: every key that starts with ``q`` sorts
inside it, and no other), read from the (list_id, email_key) index in key order. The range is only
right where text compares code point by code point: SQLite's default BINARY collation does; a
PostgreSQL database's collation (en_US, ICU) may not (it sorts "áb" between "ab" and its bound), so
there the predicate and the order compare ``email_key COLLATE "C"``, which the index
:data:`~contactsync.db.platform.CONTACT_SEARCH_INDEX` (migration 0008, PostgreSQL only) serves.

Results come in (email_key, list_id) order, one index range per list: :func:`branches` gives the
queries of one page past a position in that order, which the caller merges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from contactsync.db.backend import Backend
from contactsync.db.platform import contacts

TOP = "\U0010ffff"
"""The highest code point: ``q + TOP`` bounds every string that starts with ``q``."""

COLUMNS = ("id", "list_id", "email", "email_key", "phone", "status", "lead_score", "updated_at")
Position = tuple[str, int]
"""Where a result sits in the search order: its (email_key, list_id)."""


def starts_with(column: sa.ColumnElement[str], text: str, backend: Backend) -> sa.ColumnElement[bool]:
    """``column`` starts with ``text`` (or is it), as an index range."""
    key = backend.in_code_points(column)
    return sa.and_(key >= text, key < text + TOP)


def email_key(text: str) -> str:
    """The search text as contacts' ``email_key`` holds emails (lower-cased)."""
    return text.strip().lower()


def _past(
    key: sa.ColumnElement[str], list_id: int, position: Position | None, backward: bool
) -> sa.ColumnElement[bool]:
    """Rows of list ``list_id`` strictly past ``position`` in (email_key, list_id) order."""
    if position is None:
        return sa.true()
    at, at_list = position
    if backward:
        return key <= at if list_id < at_list else key < at
    return key >= at if list_id > at_list else key > at


def branches(
    list_ids: Sequence[int],
    text: str,
    backend: Backend,
    *,
    position: Position | None,
    backward: bool,
    limit: int,
) -> list[sa.Select[Any]]:
    """Per list, the first ``limit`` contacts past ``position`` whose email starts with ``text`` (any
    case) and, unless ``text`` has an ``@``, those whose phone is ``text``: nearest first."""
    c = contacts.c
    key = backend.in_code_points(c.email_key)
    order = (key.desc() if backward else key.asc(),)
    columns = [c[name] for name in COLUMNS]
    lowered, phone = email_key(text), text.strip()
    found: list[sa.Select[Any]] = []
    for list_id in list_ids:
        past = _past(key, list_id, position, backward)
        found.append(
            sa.select(*columns)
            .where(c.list_id == list_id, starts_with(c.email_key, lowered, backend), past)
            .order_by(*order)
            .limit(limit)
        )
        if phone and "@" not in phone:
            found.append(
                sa.select(*columns)
                .where(c.list_id == list_id, c.phone == phone, past)
                .order_by(*order)
                .limit(limit)
            )
    return found
