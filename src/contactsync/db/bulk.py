"""Many rows in one go, the cheapest way each database offers.

A manual run enters tens of thousands of contacts per chunk. Sent as one parameterised INSERT per
row, PostgreSQL parses, plans and answers each of them (psycopg pipelines the round trips, but the
server still does the per-statement work): measured, entering a contact cost ~300 µs, most of it in
gate, entry, activity and outbox inserts. Here:

* :func:`insert_rows` writes plain rows with ``COPY … FROM STDIN`` on PostgreSQL — one statement,
  constraints and indexes checked as usual (a duplicate key still aborts the transaction).
* :func:`insert_per_id` builds ``INSERT … SELECT … FROM unnest(:ids)`` for PostgreSQL: one row per
  id with the same other values, to which the caller adds its ``ON CONFLICT`` rule and ``RETURNING``.

SQLite runs in the process: an executemany of one prepared statement costs no round trips, so it
keeps that (callers use :func:`insert_rows` and their per-row statement there).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql

from contactsync.db.backend import IDS


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys) into ``table`` in the caller's transaction.

    Columns left out get their Python-side scalar default, as ``table.insert()`` would give them.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), list(rows))
        return
    names = list(rows[0])
    defaults = {
        c.name: c.default.arg
        for c in table.columns
        if c.name not in rows[0] and isinstance(c.default, sa.ColumnDefault) and c.default.is_scalar
    }
    columns = names + list(defaults)
    as_json = {i for i, n in enumerate(columns) if isinstance(table.c[n].type, sa.JSON)}
    tail = list(defaults.values())
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    driver = conn.connection.driver_connection
    assert driver is not None
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                values = [row[n] for n in names] + tail
                for i in as_json:
                    values[i] = json.dumps(values[i])
                copy.write_row(values)
    except psycopg.Error as exc:
        # the same exception an INSERT raises (IntegrityError for a duplicate key, ...)
        raise sa.exc.DBAPIError.instance(
            statement.as_string(driver), None, exc, psycopg.Error, dialect=conn.dialect
        ) from exc


def insert_per_id(
    table: sa.Table, id_column: str, constants: Mapping[str, sa.types.TypeEngine[Any]]
) -> postgresql.Insert:
    """PostgreSQL: one row per id of the ``ids`` array parameter, in id order, with ``constants``
    (column → type) bound by name; executed once with ``{"ids": [...], **constants}``."""
    each = sa.func.unnest(sa.bindparam(IDS, type_=postgresql.ARRAY(sa.BigInteger()))).column_valued(id_column)
    source = sa.select(
        *(sa.bindparam(name, type_=type_) for name, type_ in constants.items()), each
    ).order_by(each)
    return postgresql.insert(table).from_select([*constants, id_column], source)
