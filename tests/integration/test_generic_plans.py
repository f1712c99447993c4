"""Plan tests for prepared statements: psycopg prepares a statement after a few runs on a connection,
and PostgreSQL may then run it with a generic plan, made without the parameters' values. A partial
index is usable there only if its predicate is written as a literal: the listener's claim once bound
its state and, with a generic plan, walked every finished run in id order to take a batch. Plans
(rows read), not timings."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from contactsync.db import create_engine
from contactsync.db.listener import handler_runs, in_state
from contactsync.db.migrate import upgrade
from contactsync.listener.handlers import due_runs
from contactsync.listener.liveness import backlog

pytestmark = pytest.mark.postgres

DONE, PENDING = 50_000, 300
"""A listener's history (finished runs, lower ids) and its backlog (pending, higher ids)."""


@pytest.fixture(scope="module")
def engine(pg_module_url: str) -> Iterator[sa.Engine]:
    eng = create_engine(pg_module_url)
    upgrade(eng, side="listener")
    with eng.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO listener_inbox (transactionid, received_at_ms, method, content_type, query,"
            " headers, body, source_address, deduplicable)"
            " SELECT 't' || i, i, 'POST', 'application/x-www-form-urlencoded', '', '{}', '\\x00'::bytea,"
            f" '127.0.0.1', true FROM generate_series(1, {DONE + PENDING}) AS i"
        )
        conn.exec_driver_sql(
            "INSERT INTO listener_handler_runs (inbox_id, handler, state, attempts, next_attempt_at_ms,"
            f" received_at_ms) SELECT id, 'sql', CASE WHEN id <= {DONE} THEN 'done' ELSE 'pending' END,"
            " 0, id, id FROM listener_inbox"
        )
        conn.exec_driver_sql("ANALYZE")
    yield eng
    eng.dispose()


def _generic_plan(engine: sa.Engine, stmt: sa.ClauseElement) -> dict[str, Any]:
    """EXPLAIN ANALYZE of ``stmt`` prepared and run with a generic plan (parameters unknown when planned)."""
    compiled = stmt.compile(bind=engine)
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", compiled.string)))
    text = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", compiled.string)
    with engine.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql(f"PREPARE generic_check AS {text}")
        args = ", ".join(_literal(compiled.params[n]) for n in names)
        plan: dict[str, Any] = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE generic_check({args})"
        ).scalar_one()[0]["Plan"]
        conn.exec_driver_sql("DEALLOCATE generic_check")
        conn.rollback()
    return plan


def _literal(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows the plan's scans produced or filtered out, over the whole tree."""
    own = 0
    if "Scan" in plan["Node Type"]:
        own = int(plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)) * int(plan["Actual Loops"])
    return own + sum(_rows_read(child) for child in plan.get("Plans", []))


def test_a_claim_reads_its_batch_not_the_history(engine: sa.Engine) -> None:
    plan = _generic_plan(engine, due_runs("sql", DONE + PENDING, 100))
    assert _rows_read(plan) <= 2 * 100, plan


def test_the_check_sees_a_bound_state_walk_the_history(engine: sa.Engine) -> None:
    """The same pick with its state bound as a parameter: what the claim did, and what the test catches."""
    h = handler_runs.c
    bound = (
        sa.select(h.id)
        .where(h.handler == "sql", h.state == "pending", h.next_attempt_at_ms <= DONE + PENDING)
        .order_by(h.id)
        .limit(100)
    )
    assert _rows_read(_generic_plan(engine, bound)) >= DONE


def test_the_backlog_figures_read_the_unfinished_runs_only(engine: sa.Engine) -> None:
    h = handler_runs.c
    oldest = sa.select(sa.func.min(h.received_at_ms)).where(h.handler == "sql", in_state("pending"))
    assert _rows_read(_generic_plan(engine, oldest)) <= 1 + PENDING
    assert backlog(engine)["sql"].pending == PENDING
