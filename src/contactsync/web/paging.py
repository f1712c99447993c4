"""Keyset pagination of the admin UI's lists: "newer" and "older" links carry the id a page ends at.

An OFFSET reads and throws away every row before its page, so a deep page of a big table costs as
much as the table, and a row that arrives between two pages shifts the others (one is shown twice,
or never). A page that starts strictly past the id its link carries reads only its own rows through
an index, and rows inserted meanwhile shift nothing. Pages have no numbers: numbering them would
mean counting every row.

Lists run newest first: ``?before=<id>`` is the next page down (older), ``?after=<id>`` the page
above (newer). A search in email order uses the same machinery the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

import sqlalchemy as sa
from starlette.requests import Request

SIZE = 50
MAX_ID_DIGITS = 18
BRANCHES_PER_STATEMENT = 100
"""Per-list queries joined by one UNION ALL (SQLite allows 500 terms in a compound SELECT)."""

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Seek:
    """Where a page starts: at the top (``past`` is None), or strictly past the row whose key is
    ``past``, going down the list or (``backward``) up it."""

    past: str | None = None
    backward: bool = False


@dataclass(frozen=True, slots=True)
class Direction:
    """The query parameters that move down (``forward``) and up (``backward``) a list."""

    forward: str = "before"
    backward: str = "after"


NEWEST_FIRST = Direction()
IN_ORDER = Direction(forward="after", backward="before")


def seek(
    request: Request,
    direction: Direction = NEWEST_FIRST,
    *,
    prefix: str = "",
    numeric: bool = True,
    max_len: int = MAX_ID_DIGITS,
) -> Seek:
    """Where the requested page starts (a malformed cursor is the top of the list)."""

    def read(name: str) -> str | None:
        raw = request.query_params.get(prefix + name, "")
        if not raw or len(raw) > max_len or (numeric and not raw.isdigit()):
            return None
        return raw

    down, up = read(direction.forward), read(direction.backward)
    if down is not None:
        return Seek(down)
    if up is not None:
        return Seek(up, backward=True)
    return Seek()


@dataclass(frozen=True, slots=True)
class Window(Generic[R]):
    """One page of rows, and the query strings of the pages around it (None where there is none)."""

    rows: list[R]
    forward: str | None
    backward: str | None
    top: str | None


def window(
    fetch: Callable[[Seek, int], Sequence[R]],
    at: Seek,
    *,
    key: Callable[[R], object],
    params: Mapping[str, object] | None = None,
    direction: Direction = NEWEST_FIRST,
    prefix: str = "",
    size: int = SIZE,
) -> Window[R]:
    """The page at ``at``: ``fetch(seek, n)`` returns up to ``n`` rows strictly past ``seek.past`` in
    its direction, nearest first. ``params`` (the page's filters) are kept in every link; ``key``
    gives a row's cursor; ``prefix`` names the cursor of one list among several on a page."""
    kept = {k: str(v) for k, v in (params or {}).items() if v not in (None, "")}

    def link(name: str, row: R) -> str:
        return urlencode({**kept, prefix + name: str(key(row))})

    top = urlencode(kept)
    rows = list(fetch(at, size + 1))
    if at.backward:
        if len(rows) <= size:  # nothing above this page's worth: show the top page whole
            return window(
                fetch, Seek(), key=key, params=params, direction=direction, prefix=prefix, size=size
            )
        shown = rows[:size][::-1]
        more_below, above = True, True
    else:
        shown = rows[:size]
        more_below, above = len(rows) > size, at.past is not None
    return Window(
        rows=shown,
        forward=link(direction.forward, shown[-1]) if more_below and shown else None,
        backward=(link(direction.backward, shown[0]) if shown else top) if above else None,
        top=top if above else None,
    )


def past(
    query: sa.Select[Any],
    column: sa.ColumnElement[Any],
    at: Seek,
    n: int,
    *,
    descending: bool = True,
    value: Callable[[str], object] = int,
) -> sa.Select[Any]:
    """``query`` limited to the ``n`` rows past ``at`` in ``column`` order (``descending``: newest first)."""
    down = descending != at.backward
    if at.past is not None:
        mark = value(at.past)
        query = query.where(column < mark if down else column > mark)
    return query.order_by(column.desc() if down else column.asc()).limit(n)


def union(conn: sa.Connection, branches: Sequence[sa.Select[Any]]) -> list[sa.Row[Any]]:
    """The rows of every branch (each with its own order and limit), a UNION ALL per hundred."""
    found: list[sa.Row[Any]] = []
    for i in range(0, len(branches), BRANCHES_PER_STATEMENT):
        part = branches[i : i + BRANCHES_PER_STATEMENT]
        statement = part[0] if len(part) == 1 else sa.union_all(*(sa.select(b.subquery()) for b in part))
        found += conn.execute(statement).all()
    return found


def nearest(
    rows: Sequence[R], n: int, *, key: Callable[[R], Any], at: Seek, descending: bool = True
) -> list[R]:
    """The ``n`` rows nearest ``at`` among rows merged from several branches (each row once)."""
    seen: dict[Any, R] = {}
    for row in rows:
        seen.setdefault(key(row), row)
    down = descending != at.backward
    return sorted(seen.values(), key=key, reverse=down)[:n]
