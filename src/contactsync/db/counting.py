"""Capped counts: how many rows match, up to a cap, so a page or a scrape never counts a whole table.

``SELECT count(*)`` of a state, a list or the inbox reads every matching row: at millions of rows a
dashboard or a metrics scrape costs as much as the table. Past a few thousand the exact figure tells
nobody anything more, so a count stops at :data:`CAP` + 1 rows (``SELECT count(*) FROM (SELECT 1 …
LIMIT 10001)``, an index range read of at most that many entries) and shows "10,000+".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

CAP = 10_000


@dataclass(frozen=True, slots=True, eq=False)
class Count:
    """``n`` rows matched, counted up to ``cap`` + 1 (``n > cap``: more than ``cap``); equal to an
    int only when it is exact (a template may say "1 delivery")."""

    n: int
    cap: int = CAP

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Count):
            return (self.n, self.cap) == (other.n, other.cap)
        if isinstance(other, int):
            return not self.more and self.n == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.n, self.cap))

    @property
    def more(self) -> bool:
        return self.n > self.cap

    def __int__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __str__(self) -> str:
        return f"{self.cap:,}+" if self.more else f"{self.n:,}"


def capped(conn: sa.Connection, query: sa.Select[Any], *, cap: int = CAP) -> Count:
    """How many rows ``query`` selects, reading at most ``cap`` + 1 of them."""
    rows = query.limit(cap + 1).subquery("capped")
    return Count(int(conn.execute(sa.select(sa.func.count()).select_from(rows)).scalar_one()), cap)


def matching(
    table: sa.Table,
    *where: sa.ColumnElement[bool],
    by: sa.ColumnElement[Any] | tuple[sa.ColumnElement[Any], ...],
) -> sa.Select[Any]:
    """The rows of ``table`` that ``where`` selects, in the order of the index that finds them (``by``:
    its columns after those ``where`` fixes): PostgreSQL then reads that index's range rather than
    walking another in the hope of meeting enough matches early."""
    order = by if isinstance(by, tuple) else (by,)
    return sa.select(sa.literal_column("1")).select_from(table).where(*where).order_by(*order)


def total(counts: Iterable[Count], *, cap: int = CAP) -> Count:
    """The sum of capped counts, itself capped."""
    return Count(min(sum(c.n for c in counts), cap + 1), cap)
