"""Keyset pagination: ``limit`` plus an opaque ``cursor``; stable under concurrent inserts.

Offsets skip or repeat rows when the table changes between pages and get slower with depth; a
cursor (the last id seen) does neither. Clients pass ``next_cursor`` back until it is ``null``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Generic, TypeVar

import sqlalchemy as sa
from fastapi import Query
from pydantic import BaseModel, Field

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")]
Cursor = Annotated[
    str | None, Query(max_length=20, pattern=r"^[0-9]{1,19}$", description="next_cursor of the previous page")
]


def after(
    column: sa.ColumnElement[int], cursor: str | None, *, descending: bool = False
) -> sa.ColumnElement[bool]:
    """Condition selecting the rows after ``cursor`` in ``column`` order."""
    if cursor is None:
        return sa.true()
    value = min(int(cursor), 2**63 - 1)
    return column < value if descending else column > value


def cut(ids: Sequence[int], limit: int) -> tuple[int, str | None]:
    """Given ``limit + 1`` fetched ids: how many to return and the next cursor."""
    if len(ids) > limit:
        return limit, str(ids[limit - 1])
    return len(ids), None
