"""The projection's batch merge: a bounded number of statements per batch, and the tables one by one gives.

SQLite, PostgreSQL and MariaDB. Statements are counted with an engine event on the projection's own
engine: each ``execute`` or ``executemany`` is one.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.db import listener as t
from contactsync.db.engine import write_transaction
from contactsync.listener.projection import KINDS, Projection, apply, apply_batch, carried
from contactsync.wire.payload import SyncPayload
from support.listener import payload, wait_for

NOW_MS = 1_700_000_000_000


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def projection(request: pytest.FixtureRequest) -> Iterator[Projection]:
    fixture = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}[request.param]
    proj = Projection(str(request.getfixturevalue(fixture)), clock_ms=lambda: NOW_MS)
    try:
        yield proj
    finally:
        proj.close()


class Statements:
    """Counts the statements an engine sends (an ``executemany`` is one)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.count = 0

    def _seen(self, *_: Any) -> None:
        self.count += 1

    def __enter__(self) -> Statements:
        sa.event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)


def _statements(proj: Projection, payloads: list[SyncPayload]) -> int:
    with Statements(proj.engine) as counted:
        assert proj.handle_batch(payloads) == [None] * len(payloads)
    return counted.count


BOUND = 2 + 2 * (1 + 1 + len(KINDS)) + 1
"""Per batch at most: read contacts, insert and update them, read/insert/update fields and each kind,
and the SQLite ``BEGIN IMMEDIATE``."""


def test_a_batch_runs_a_bounded_number_of_statements_whatever_its_size(projection: Projection) -> None:
    def batch(contacts: range, tid: int, clicks: int = 3) -> list[SyncPayload]:
        return [payload(tid + n, contact_id=n, email=f"{tid}@example.com", clicks=clicks) for n in contacts]

    large = range(100, 150)
    assert _statements(projection, batch(range(1, 6), 1000)) == _statements(projection, batch(large, 2000))
    # the same contacts again: newer attributes and more clicks, and a late older delivery's new goal
    late = {"goals-reached": [{"id": 12, "name": "Late", "reach_date": "2026-01-01 10:00:00"}]}
    updated = [*batch(large, 3000, clicks=9), payload(1500, contact_id=120, extra=late)]
    assert _statements(projection, updated) <= BOUND
    assert _statements(projection, batch(large, 2000)) <= BOUND  # all seen before: nothing to write
    ids = [str(n) for n in large]
    assert _values(projection, t.contacts.c.email, ids) == {"3000@example.com"}
    assert _values(projection, t.links_clicked.c.clicks, ids) == {9}
    first = _values(projection, t.goals_reached.c.first_transactionid, ids)
    assert first == {1500, *range(2100, 2150)}  # goal 11 from the first batch of each; goal 12 late


def _values(proj: Projection, column: sa.Column[Any], contact_ids: list[str]) -> set[Any]:
    with proj.engine.connect() as conn:
        return set(
            conn.execute(sa.select(column).where(column.table.c.contact_id.in_(contact_ids))).scalars()
        )


# --- batch == one by one, on the tables ------------------------------------------------------------------

TEXT = st.sampled_from(["", "a", "b", "Zoë & co"])
DATE = st.sampled_from(["2026-03-01 10:00:00", "2026-04-01 10:00:00"])
SECTIONS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "campaigns-opened": st.fixed_dictionaries(
        {"id": st.sampled_from([7, 8]), "name": TEXT, "open_date": DATE}
    ),
    "links-clicked": st.fixed_dictionaries(
        {"url": st.sampled_from(["https://x.example/a", "https://x.example/b"]), "clicks": st.integers(0, 9)}
    ),
    "pages-visited": st.fixed_dictionaries({"page": st.sampled_from(["/pricing", "/"]), "visit_date": DATE}),
    "goals-reached": st.fixed_dictionaries(
        {"id": st.sampled_from([11, 12]), "name": TEXT, "reach_date": DATE}
    ),
    "lead-score": st.fixed_dictionaries(
        {"id": st.just(15), "name": TEXT, "score": st.integers(0, 20), "score_date": DATE}
    ),
}


def _some(draw: st.DrawFn, keys: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    return {key: draw(strategy) for key, strategy in keys.items() if draw(st.booleans())}


@st.composite
def wire(draw: st.DrawFn, transactionid: int) -> dict[str, Any]:
    """A delivery for one of three contacts carrying a drawn subset of everything the projection keeps."""
    out: dict[str, Any] = {
        "transactionid": transactionid,
        "contact": {
            "id": draw(st.sampled_from([1, 2, 3])),
            **_some(draw, dict.fromkeys(("email", "phone"), TEXT)),
        },
    }
    if draw(st.booleans()):
        fids = draw(st.lists(st.sampled_from([3, 4, 5]), min_size=1, max_size=3, unique=True))
        out["fields"] = [{"id": fid, **_some(draw, {"name": TEXT, "value": TEXT})} for fid in fids]
    if draw(st.booleans()):
        out["lead-status"] = _some(draw, {"score": st.integers(0, 60), "label": TEXT})
    for section, item in SECTIONS.items():
        if draw(st.booleans()):
            out[section] = draw(st.lists(item, min_size=1, max_size=3))
    return out


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int], list[int]]:
    """Deliveries in transactionid order; those applied before the batch; the batch (any order, repeats)."""
    tids = sorted(draw(st.lists(st.integers(1, 10_000), min_size=1, max_size=12, unique=True)))
    deliveries = [draw(wire(tid)) for tid in tids]
    indexes = range(len(deliveries))
    before = draw(st.lists(st.sampled_from(indexes), unique=True, max_size=len(deliveries)))
    batch = draw(st.permutations([i for i in indexes if i not in before]))
    repeats = draw(st.lists(st.sampled_from(indexes), max_size=4))
    return deliveries, sorted(before), [*batch, *repeats]


RUNS = itertools.count(1)


def _shifted(delivery: dict[str, Any], base: int) -> SyncPayload:
    return SyncPayload.from_wire(
        {**delivery, "contact": {**delivery["contact"], "id": delivery["contact"]["id"] + base}}
    )


def _snapshot(proj: Projection, base: int) -> dict[str, list[tuple[Any, ...]]]:
    ids = [str(base + n) for n in (1, 2, 3)]
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with proj.engine.connect() as conn:
        for table in t.PROJECTION_TABLES:
            columns = [c for c in table.c if c.name not in ("id", "updated_at_ms")]
            rows = conn.execute(sa.select(*columns).where(table.c.contact_id.in_(ids))).all()
            tables[table.name] = sorted(
                (
                    tuple(
                        int(v) - base if c.name == "contact_id" else v
                        for c, v in zip(columns, row, strict=True)
                    )
                    for row in rows
                ),
                key=repr,
            )
    return tables


@settings(max_examples=40)
@given(drawn=batches())
def test_one_batch_gives_the_tables_of_one_by_one_in_transactionid_order(
    projection: Projection, drawn: tuple[list[dict[str, Any]], list[int], list[int]]
) -> None:
    deliveries, before, batch = drawn
    one_by_one, batched = next(RUNS) * 1000, next(RUNS) * 1000
    for delivery in deliveries:
        projection.apply(_shifted(delivery, one_by_one))
    for index in before:
        projection.apply(_shifted(deliveries[index], batched))
    found = [carried(_shifted(deliveries[index], batched)) for index in batch]
    with write_transaction(projection.engine) as conn:  # not handle_batch: no falling back one by one
        apply_batch(conn, [delivery for delivery in found if delivery is not None], now_ms=NOW_MS)
    assert _snapshot(projection, batched) == _snapshot(projection, one_by_one)


# --- a contact inserted by another process meanwhile -------------------------------------------------------


def test_a_contact_inserted_concurrently_is_merged_not_lost(pg_url: str) -> None:
    projection = Projection(pg_url, clock_ms=lambda: NOW_MS)
    other = Projection(pg_url, clock_ms=lambda: NOW_MS, migrate=False)
    try:
        with other.engine.connect() as conn, conn.begin():
            first = carried(payload(100, contact_id=7, email="old@example.com"))
            assert first is not None
            apply(conn, first, now_ms=NOW_MS)  # inserted, not committed yet
            results: list[list[Exception | None]] = []
            batch = [payload(200, contact_id=7, email="new@example.com"), payload(201, contact_id=8)]
            worker = threading.Thread(target=lambda: results.append(projection.handle_batch(batch)))
            worker.start()
            wait_for(lambda: _waiting_for_a_lock(projection.engine))
        worker.join(60)
        assert results == [[None, None]]
    finally:
        projection.close()
        other.close()
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.contacts.c.contact_id, t.contacts.c.email, t.contacts.c.last_transactionid)
        )
        stored = sorted(tuple(row) for row in rows)
    engine.dispose()
    assert stored == [("7", "new@example.com", 200), ("8", "jane@example.com", 201)]


def _waiting_for_a_lock(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        waiting = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        ).scalar_one()
    return bool(waiting)


@pytest.mark.postgres
def test_reads_stay_lookups_after_the_tables_grew_under_a_cached_plan(pg_url: str) -> None:
    """Whether PostgreSQL reuses a generic plan made while the tables were empty (psycopg prepares a
    statement on its sixth run, PostgreSQL may go generic from the prepared statement's sixth) or
    plans afresh for tables grown without statistics, the planner picks a scan; the merge's reads
    stay index lookups. Rows read are counted with the transaction's own table statistics."""
    proj = Projection(pg_url, clock_ms=lambda: NOW_MS)
    try:
        for batch in range(12):  # while the tables are nearly empty: prepared, and planned for that
            assert proj.handle_batch([payload(batch + 1, contact_id=batch + 1)]) == [None]
        grown = 20_000
        with proj.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO sync_contacts (contact_id, last_transactionid, updated_at_ms)"
                f" SELECT 'g' || i, 1, 0 FROM generate_series(1, {grown}) AS i"
            )
            conn.exec_driver_sql(
                "INSERT INTO sync_field_values (contact_id, field_id, name, value)"
                f" SELECT 'g' || i, '3', 'First Name', 'x' FROM generate_series(1, {grown}) AS i"
            )
        batch_of = [carried(payload(100 + i, contact_id=1000 + i)) for i in range(20)]
        with proj.engine.begin() as conn:
            apply_batch(conn, [d for d in batch_of if d is not None], now_ms=NOW_MS)
            read: dict[str, int] = dict(
                conn.exec_driver_sql(
                    "SELECT relname, seq_tup_read FROM pg_stat_xact_user_tables"
                    " WHERE relname IN ('sync_contacts', 'sync_field_values')"
                ).all()
            )
        assert read == {"sync_contacts": 0, "sync_field_values": 0}, read
    finally:
        proj.close()
