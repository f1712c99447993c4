"""Statements built once with SQLAlchemy Core, run as driver SQL; many rows written in one statement.

A hot loop (the listener's projection merges thousands of entries a second) cannot afford SQLAlchemy's
per-call compilation, nor psycopg's per-row work in an ``executemany``. :func:`run` and :func:`run_many`
compile a Core statement once per database and parameter set and send its text through the
connection (engine events and logging still see it); :func:`insert_many` and :func:`update_many` write
rows with one ``unnest`` statement over an array per column where the database binds arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

from contactsync.db.backend import backend_of

_Compiled = tuple[str, tuple[str, ...] | None]
_COMPILED: dict[tuple[sa.ClauseElement, str, tuple[str, ...]], _Compiled] = {}


def _compiled(stmt: sa.ClauseElement, dialect: sa.Dialect, keys: tuple[str, ...]) -> _Compiled:
    """SQL text of ``stmt`` for ``dialect`` and parameter ``keys``, and the key order if positional."""
    found = _COMPILED.get((stmt, dialect.name, keys))
    if found is None:
        table = getattr(stmt, "table", None)
        columns = [k for k in keys if table is None or k in table.c]
        compiled = cast(SQLCompiler, stmt.compile(dialect=dialect, column_keys=columns))
        order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        found = _COMPILED[(stmt, dialect.name, keys)] = (str(compiled), order)
    return found


def run(conn: sa.Connection, stmt: sa.ClauseElement, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Execute a statement built once as driver SQL inside ``conn``'s transaction; rows as plain tuples.

    Compiling an expression per call cost more than running it; compiled once per dialect and parameter
    set, the SQL still goes through the connection, so engine events (logging, tracing) see it.
    """
    sql, order = _compiled(stmt, conn.dialect, tuple(params))
    result = conn.exec_driver_sql(sql, tuple(params[k] for k in order) if order else dict(params))
    return [tuple(row) for row in result] if result.returns_rows else []


def run_many(conn: sa.Connection, stmt: sa.ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
    """:func:`run` for several rows with the same keys: one ``executemany`` (pipelined by psycopg)."""
    sql, order = _compiled(stmt, conn.dialect, tuple(rows[0]))
    if order:
        conn.exec_driver_sql(sql, [tuple(row[k] for k in order) for row in rows])
    else:
        conn.exec_driver_sql(sql, [dict(row) for row in rows])


def insert_many(conn: sa.Connection, insert: sa.Insert, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys): on PostgreSQL one statement over an array per column."""
    if not backend_of(conn).arrays:
        run_many(conn, insert, rows)
        return
    columns = tuple(rows[0])
    _run_arrays(conn, _pg_insert(insert.table, columns), columns, rows)


def update_many(
    conn: sa.Connection, update: sa.Update, key: Mapping[str, str], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Update ``rows`` (all with the same keys) found by their ``key`` columns (column → the bound name
    in ``update``'s WHERE): on PostgreSQL one statement joined to an array per column."""
    if not backend_of(conn).arrays:
        run_many(conn, update, [{key.get(k, k): v for k, v in row.items()} for row in rows])
        return
    columns = (*key, *(c for c in rows[0] if c not in key))
    _run_arrays(conn, _pg_update(update.table, tuple(key), columns), columns, rows)


def _run_arrays(
    conn: sa.Connection, sql: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> None:
    # pipelined executemany costs psycopg ~10 µs of client CPU per row; arrays cost ~2 µs (measured)
    conn.exec_driver_sql(sql, tuple([row[c] for row in rows] for c in columns))


@functools.cache
def _pg_arrays(table: sa.Table, columns: tuple[str, ...]) -> str:
    """Binary array parameters (psycopg's ``%b``), one per column, cast to the column's type."""
    types = ("bigint" if isinstance(table.c[c].type, sa.Integer) else "text" for c in columns)
    return ", ".join(f"%b::{kind}[]" for kind in types)


@functools.cache
def _pg_insert(table: sa.Table, columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    return f'INSERT INTO "{table.name}" ({names}) SELECT * FROM unnest({_pg_arrays(table, columns)})'


@functools.cache
def _pg_update(table: sa.Table, key: tuple[str, ...], columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    assign = ", ".join(f'"{c}" = v."{c}"' for c in columns if c not in key)
    match = " AND ".join(f'"{table.name}"."{c}" = v."{c}"' for c in key)
    return (
        f'UPDATE "{table.name}" SET {assign}'
        f" FROM unnest({_pg_arrays(table, columns)}) AS v({names}) WHERE {match}"
    )
