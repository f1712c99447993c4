"""Automation costs on SQLite: the event path's overhead, and manual runs compiled to SQL vs Python.

(a) ``event_overhead``: ingesting the same 50,000 activity events (batches of 500, one transaction
each) into a database with 10 active automations (triggered by those events, selective
conditions, ``once``, one sync action each) vs. a database with none. Goal ≤ 2.

(b) ``sql_vs_python``: a complete manual run over a 1,000,000-contact list with a 3-condition rule
(a text field, the lead score and "opened campaign 3 in the last 30 days"), matched by the SQL
compilation vs. by loading every contact and evaluating the Python predicate; both enqueue the
same ~1,000 contacts. Goal ≥ 20. ``match_sql_vs_python`` is the same comparison without the
(identical) enqueueing work; ``manual_run_sqlite_s`` is the SQL run's wall time.

Ratios use this process's CPU time (SQLite runs in-process, so that is all the work) because wall
time on a shared machine swings with other load; both comparisons take the best of ``--rounds``
interleaved rounds (events: on fresh copies of the same database; manual runs: outbox, entries and
runs emptied before each, and every run must leave the same outbox rows), and the per-round manual
ratios are printed too. Data is generated in SQL (recursive CTEs), not row by row. Run:
``python bench/automation.py [--events 50000] [--contacts 1000000] [--chunk 50000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter

from contactsync.automation import actions as act
from contactsync.automation import automations, events, lists, manual
from contactsync.automation.action_settings import SyncActionSettings
from contactsync.automation.activity import Event
from contactsync.automation.rules import Group, Reentry, TriggerSpec
from contactsync.automation.runtime import Runtime
from contactsync.db import create_engine
from contactsync.db import platform as t
from contactsync.db.migrate import upgrade
from contactsync.wire.transactionid import TransactionIdGenerator

NOW = datetime(2026, 6, 1, 8, 0, 0)
TS = NOW.strftime("%Y-%m-%d %H:%M:%S.%f")
CITIES = ("Paris", "Lyon", "Nice", "Lille", "Nantes", "Rennes", "Brest", "Metz", "Dijon", "Tours")


def runtime() -> Runtime:
    ms = iter(range(1_780_000_000_000, 1_900_000_000_000))
    return Runtime(clock=lambda: NOW, ids=TransactionIdGenerator(clock_ms=lambda: next(ms)))


def make_db(directory: Path, name: str, contacts: int) -> tuple[sa.Engine, int]:
    """A migrated SQLite file with one list, a City field and ``contacts`` contacts (SQL-generated)."""
    url = f"sqlite:///{directory / name}"
    upgrade(url)
    engine = create_engine(url)
    rt = runtime()
    with engine.begin() as conn:
        account = lists.create_account(conn, name="bench", now=NOW)
        lst = lists.create_list(conn, lists.ListIn(account_id=account, name="all"), now=NOW)
        lists.create_field(conn, lists.FieldIn(list_id=lst.id, name="City"), now=NOW)
        series = f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {contacts})"
        conn.exec_driver_sql(
            f"{series} INSERT INTO contacts (id, list_id, email, email_key, phone, status, lead_score,"
            f" created_at, updated_at) SELECT i, {lst.id}, 'c' || i || '@x.test', 'c' || i || '@x.test', '',"
            f" 'subscribed', ((i * 2654435761) % 1000003) % 100, '{TS}', '{TS}' FROM s"
        )
        cities = " ".join(f"WHEN {k} THEN '{c}'" for k, c in enumerate(CITIES))
        conn.exec_driver_sql(
            f"{series} INSERT INTO field_values (contact_id, field_id, value, value_num)"
            f" SELECT i, 1, CASE ((i * 40503) % 1000033) % 10 {cities} END, NULL FROM s"
        )
        # every third contact opened campaign 3 or 4, 0-59 days ago
        conn.exec_driver_sql(
            f"{series} INSERT INTO activities (contact_id, kind, ref_id, name, url, value, occurred_at)"
            f" SELECT i, 'campaign_open', 3 + (i % 2), 'May', '', NULL,"
            f" strftime('%Y-%m-%d %H:%M:%S', '{TS[:19]}', '-' || (i % 60) || ' days') || '.000000'"
            f" FROM s WHERE i % 3 = 0"
        )
        assert rt is not None
    return engine, lst.id


def add_automation(engine: sa.Engine, list_id: int, trigger: str, rule: dict[str, Any]) -> int:
    rt = runtime()
    with engine.begin() as conn:
        auto = automations.create_automation(
            conn,
            rt,
            automations.AutomationIn(
                list_id=list_id,
                name=f"{trigger} bench",
                trigger=TriggerSpec(event=trigger),
                conditions=Group.model_validate(rule),
                reentry=Reentry(policy="once"),
            ),
        )
        settings = SyncActionSettings(url="https://crm.test/hook?id=[#ID#]&email=[#LOWER EMAIL#]")
        act.create_action(conn, rt, automation_id=auto.id, settings=settings)
    return auto.id


def rule(city: str, min_score: int, campaign: int) -> dict[str, Any]:
    return {
        "op": "and",
        "conditions": [
            {"type": "field", "subject": "field:1", "op": "eq", "value": city},
            {"type": "field", "subject": "lead_score", "op": "gte", "value": min_score},
            {"type": "activity", "kind": "campaign_open", "ref_id": campaign, "within_days": 30},
        ],
    }


def make_events(n: int, contacts: int) -> list[Event]:
    rnd = random.Random(4)
    raw: list[dict[str, Any]] = []
    for i in range(n):
        cid = rnd.randint(1, contacts)
        at = NOW - timedelta(seconds=rnd.randint(0, 86400))
        match i % 5:
            case 0:
                raw.append(
                    {"kind": "campaign.opened", "contact_id": cid, "campaign_id": 3, "occurred_at": at}
                )
            case 1:
                raw.append({"kind": "link.clicked", "contact_id": cid, "url": f"https://s.test/{i % 50}"})
            case 2:
                raw.append({"kind": "page.visited", "contact_id": cid, "url": f"https://s.test/p{i % 20}"})
            case 3:
                raw.append({"kind": "goal.reached", "contact_id": cid, "goal_id": i % 4})
            case _:
                raw.append({"kind": "lead_score.changed", "contact_id": cid, "score_id": 1, "value": 1})
    return TypeAdapter(list[Event]).validate_python(raw)


def ingest(engine: sa.Engine, evs: list[Event], batch: int) -> tuple[float, int]:
    """CPU seconds of this process (SQLite runs in it) to ingest ``evs``; and deliveries queued."""
    rt = runtime()
    queued = 0
    started = time.process_time()
    for start in range(0, len(evs), batch):
        with engine.begin() as conn:
            queued += len(events.ingest_events(conn, rt, evs[start : start + batch]).transactionids)
    return time.process_time() - started, queued


def bench_events(directory: Path, n_events: int, contacts: int, batch: int, rounds: int) -> float:
    evs = make_events(n_events, contacts)
    base_engine, _ = make_db(directory, "events-base.db", contacts)
    auto_engine, list_id = make_db(directory, "events-auto.db", contacts)
    triggers = ["campaign.opened", "link.clicked", "page.visited", "goal.reached", "lead_score.changed"]
    for k in range(10):
        add_automation(auto_engine, list_id, triggers[k % 5], rule(CITIES[k], 50 + 4 * k, 3 + k % 2))
    base_engine.dispose()
    auto_engine.dispose()
    times: dict[str, list[float]] = {"base": [], "auto": []}
    queued = 0
    for _ in range(rounds):  # interleaved rounds on fresh copies; best of each (shared, noisy machine)
        for name in times:
            copy = directory / f"run-{name}.db"
            shutil.copyfile(directory / f"events-{name}.db", copy)
            engine = create_engine(f"sqlite:///{copy}")
            seconds, queued_now = ingest(engine, evs, batch)
            engine.dispose()
            times[name].append(seconds)
            queued = queued_now if name == "auto" else queued
    base_s, auto_s = min(times["base"]), min(times["auto"])
    print(f"events: {n_events} in batches of {batch}, {contacts} contacts, best of {rounds}")
    print(f"  no automations      {base_s:7.2f} CPU s  ({n_events / base_s:,.0f} events/s)")
    rate = n_events / auto_s
    print(f"  10 automations      {auto_s:7.2f} CPU s  ({rate:,.0f} events/s, {queued} deliveries queued)")
    ratio = auto_s / base_s
    print(f"event_overhead={ratio:.2f}")
    return ratio


def timed_run(
    engine: sa.Engine, automation_id: int, strategy: manual.Strategy, chunk: int
) -> tuple[float, float, Any, str]:
    """Wall and CPU seconds of one complete manual run (outbox and entries emptied first), the run,
    and a digest of the outbox rows it left (taken after the clock stops)."""
    rt = runtime()
    with engine.begin() as conn:
        conn.execute(t.deliveries.delete())
        conn.execute(t.automation_entries.delete())
        conn.execute(t.activities.delete().where(t.activities.c.kind == "automation"))
        conn.execute(t.manual_runs.delete())
    started, cpu = time.perf_counter(), time.process_time()
    with engine.begin() as conn:
        run = manual.start_run(conn, rt, automation_id)
    done = manual.run_to_completion(engine, rt, run.id, chunk_size=chunk, strategy=strategy)
    wall_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    d = t.deliveries.c
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for row in conn.execute(
            sa.select(d.transactionid, d.contact_id, d.method, d.url, d.body).order_by(d.transactionid)
        ):
            digest.update(repr(tuple(row)).encode())
    return wall_s, cpu_s, done, digest.hexdigest()


def bench_manual(directory: Path, contacts: int, chunk: int, rounds: int) -> float:
    started = time.perf_counter()
    engine, list_id = make_db(directory, "manual.db", contacts)
    automation_id = add_automation(engine, list_id, "manual", rule("Paris", 90, 3))
    generated_s = time.perf_counter() - started
    print(f"manual run: {contacts:,} contacts generated in {generated_s:.1f} s, chunks of {chunk}")
    runs: dict[manual.Strategy, list[tuple[float, float, Any, str]]] = {"sql": [], "python": []}
    for _ in range(rounds):  # interleaved; best of each (shared, noisy machine)
        for strategy, done in runs.items():
            done.append(timed_run(engine, automation_id, strategy, chunk))
    (sql_s, sql_cpu, sql_run, _), (py_s, py_cpu, _, _) = (min(runs[k], key=lambda r: r[1]) for k in runs)
    # every run, either strategy, left exactly the same outbox rows (same ids, URLs and bodies)
    assert len({r[3] for r in runs["sql"] + runs["python"]}) == 1
    print(f"  best of {rounds} complete runs each (all ended with the same outbox rows)")
    print(f"  SQL-compiled        {sql_s:7.2f} s wall, {sql_cpu:7.2f} CPU s  ({sql_run.matched} matched)")
    print(f"  Python predicate    {py_s:7.2f} s wall, {py_cpu:7.2f} CPU s")
    print(
        "  per round (CPU)     "
        + ", ".join(f"{p[1] / s[1]:.1f}" for s, p in zip(*runs.values(), strict=True))
    )
    ratio = py_cpu / sql_cpu
    match_sql, match_py = (
        match_only(engine, automation_id, "sql", chunk),
        match_only(engine, automation_id, "python", chunk),
    )
    print(
        f"  matching only       SQL {match_sql:.2f} CPU s, Python {match_py:.2f} CPU s (one pass, no enqueue)"
    )
    print(f"sql_vs_python={ratio:.1f}")
    print(f"match_sql_vs_python={match_py / match_sql:.1f}")
    print(f"manual_run_sqlite_s={sql_s:.2f}")
    return ratio


def match_only(engine: sa.Engine, automation_id: int, strategy: manual.Strategy, chunk: int) -> float:
    """CPU seconds to find the matching contacts of the whole list, chunk by chunk, enqueueing nothing."""
    rt = runtime()
    started = time.process_time()
    with engine.connect() as conn:
        compiled = automations.compile_automation(conn, rt, automations.get_automation(conn, automation_id))
        top = conn.execute(sa.select(sa.func.max(t.contacts.c.id))).scalar_one()
        found = 0
        for after in range(0, top, chunk):
            found += len(manual.match_range(conn, compiled, after, after + chunk, now=NOW, strategy=strategy))
    assert found > 0
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--event-contacts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", choices=["events", "manual"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="contactsync-bench-") as tmp:
        if args.skip != "events":
            bench_events(Path(tmp), args.events, args.event_contacts, args.batch, args.rounds)
        if args.skip != "manual":
            bench_manual(Path(tmp), args.contacts, args.chunk, args.rounds)


if __name__ == "__main__":
    main()
