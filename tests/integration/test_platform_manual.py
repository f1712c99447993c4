"""Manual runs on SQLite and PostgreSQL: both strategies agree, progress, once, kill -9 and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from contactsync.automation import actions as act
from contactsync.automation import automations, lists, manual
from contactsync.automation.action_settings import SyncActionSettings
from contactsync.automation.rules import Group, TriggerSpec
from contactsync.automation.runtime import Runtime
from contactsync.db import create_engine
from contactsync.db import platform as t
from contactsync.db.migrate import upgrade
from contactsync.errors import RunInProgressError
from contactsync.settings import Settings
from contactsync.wire.transactionid import TransactionIdGenerator

T0 = datetime(2026, 6, 1, 8, 0, 0)
N = 120
RULE = {
    "op": "and",
    "conditions": [
        {"type": "field", "subject": "field:1", "op": "in", "value": ["Paris", "Lyon"]},
        {
            "op": "or",
            "type": "group",
            "conditions": [
                {"type": "field", "subject": "lead_score", "op": "gte", "value": 20},
                {"type": "activity", "kind": "campaign_open", "ref_id": 3, "within_days": 30},
            ],
        },
    ],
}


def _runtime(start_ms: int = 0) -> Runtime:
    ms = iter(range(1_700_000_000_000 + start_ms, 1_800_000_000_000))
    return Runtime(clock=lambda: T0, ids=TransactionIdGenerator(clock_ms=lambda: next(ms)))


def seed(url: str) -> tuple[int, int]:
    """A list of N contacts (a third match), one manual automation with one action; returns the ids."""
    upgrade(url)
    engine = create_engine(url)
    rt = _runtime()
    with engine.begin() as conn:
        account = lists.create_account(conn, name="a", now=T0)
        lst = lists.create_list(conn, lists.ListIn(account_id=account, name="l"), now=T0)
        lists.create_field(conn, lists.FieldIn(list_id=lst.id, name="City"), now=T0)
        conn.execute(
            t.contacts.insert(),
            [
                {
                    "id": i,
                    "list_id": lst.id,
                    "email": f"c{i}@x.test",
                    "email_key": f"c{i}@x.test",
                    "phone": "",
                    "status": "subscribed",
                    "lead_score": (i * 7) % 40,
                    "created_at": T0,
                    "updated_at": T0,
                }
                for i in range(1, N + 1)
            ],
        )
        cities = ["Paris", "Lyon", "Nice"]
        conn.execute(
            t.field_values.insert(),
            [
                {"contact_id": i, "field_id": 1, "value": cities[i % 3], "value_num": None}
                for i in range(1, N + 1)
            ],
        )
        conn.execute(
            t.activities.insert(),
            [
                {
                    "contact_id": i,
                    "kind": "campaign_open",
                    "ref_id": 3,
                    "name": "c",
                    "url": "",
                    "value": None,
                    "occurred_at": T0 - timedelta(days=i % 60),
                }
                for i in range(1, N + 1, 2)
            ],
        )
        auto = automations.create_automation(
            conn,
            rt,
            automations.AutomationIn(
                list_id=lst.id,
                name="m",
                trigger=TriggerSpec(event="manual"),
                conditions=Group.model_validate(RULE),
            ),
        )
        action = act.create_action(
            conn, rt, automation_id=auto.id, settings=SyncActionSettings(url="https://h.test/[#ID#]")
        )
    engine.dispose()
    return auto.id, action.id


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    seed(db_url)
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


def _expected(engine: sa.Engine) -> set[int]:
    from contactsync.automation.predicate import compile_predicate
    from contactsync.automation.snapshot import load_views

    predicate = compile_predicate(Group.model_validate(RULE), field_types={1: "text"})
    with engine.connect() as conn:
        views = load_views(conn, list(range(1, N + 1)), kinds={"campaign_open"})
    return {cid for cid, v in views.items() if predicate(v, T0)}


def _outbox(engine: sa.Engine) -> list[tuple[int, int]]:
    with engine.connect() as conn:
        return [
            (r.contact_id, r.transactionid)
            for r in conn.execute(sa.select(t.deliveries).order_by(t.deliveries.c.contact_id))
        ]


@pytest.mark.parametrize("strategy", ["sql", "python"])
def test_manual_run_enqueues_every_match_once(engine: sa.Engine, strategy: manual.Strategy) -> None:
    rt = _runtime()
    with engine.begin() as conn:
        run = manual.start_run(conn, rt, 1)
    seen: list[manual.ManualRunOut] = []
    done = manual.run_to_completion(
        engine, rt, run.id, chunk_size=17, strategy=strategy, on_progress=seen.append
    )
    expected = _expected(engine)
    assert 10 < len(expected) < N
    assert (done.state, done.total, done.scanned, done.matched) == ("completed", N, N, len(expected))
    assert done.progress == 1.0
    assert [r.scanned for r in seen] == sorted(r.scanned for r in seen)
    rows = _outbox(engine)
    assert [cid for cid, _ in rows] == sorted(expected)
    # `once`: a second run finds the same matches but lets nobody in again
    with engine.begin() as conn:
        again = manual.start_run(conn, rt, 1)
    again = manual.run_to_completion(engine, rt, again.id, chunk_size=50, strategy=strategy)
    assert (again.matched, again.enqueued) == (len(expected), 0)
    assert len(_outbox(engine)) == len(expected)


def test_a_second_start_names_the_running_run_and_start_or_resume_returns_it(engine: sa.Engine) -> None:
    rt = _runtime()
    with engine.begin() as conn:
        first = manual.start_run(conn, rt, 1)
        with pytest.raises(RunInProgressError, match=f"manual run {first.id} of automation 1") as refused:
            manual.start_run(conn, rt, 1)
        assert refused.value.run_id == first.id
        assert manual.start_or_resume(conn, rt, 1).id == first.id
        assert [r.id for r in manual.list_runs(conn, 1)] == [first.id]
        cancelled = manual.cancel_run(conn, rt, first.id)
    assert cancelled.state == "cancelled"
    with engine.begin() as conn:
        assert manual.run_chunk(conn, rt, first.id).scanned == 0


CHILD = """
import sys
from datetime import datetime
import sqlalchemy as sa
from contactsync.automation import manual
from contactsync.automation.runtime import Runtime
from contactsync.db import create_engine
from contactsync.wire.transactionid import TransactionIdGenerator

engine = create_engine(sys.argv[1])
ms = iter(range(1_700_000_000_000, 1_800_000_000_000))
rt = Runtime(clock=lambda: datetime(2026, 6, 1, 8), ids=TransactionIdGenerator(clock_ms=lambda: next(ms)))
with engine.begin() as conn:
    run = manual.start_run(conn, rt, 1)
for chunk in range(1, 100):
    with engine.begin() as conn:
        state = manual.run_chunk(conn, rt, run.id, chunk_size=10)
        if chunk == 4:
            print("mid-chunk", state.scanned, flush=True)
            sys.stdin.readline()  # wait here, transaction open, until killed
    print("committed", state.scanned, flush=True)
"""


def test_kill_9_mid_run_then_resume_completes_without_duplicates(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    with subprocess.Popen(
        [sys.executable, str(script), db_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    ) as child:
        assert child.stdout is not None
        lines = [child.stdout.readline().strip() for _ in range(4)]
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    assert lines == ["committed 10", "committed 20", "committed 30", "mid-chunk 40"]
    assert child.returncode == -signal.SIGKILL
    with engine.connect() as conn:
        run = manual.get_run(conn, 1)
    assert (run.state, run.scanned, run.cursor_contact_id) == ("running", 30, 30)
    committed = _outbox(engine)
    assert {cid for cid, _ in committed} == {cid for cid in _expected(engine) if cid <= 30}
    # resume in a new process (new id generator seeded from the database)
    rt = Runtime.create(Settings(), engine=engine, clock=lambda: T0)
    with engine.begin() as conn:
        resumed = manual.start_or_resume(conn, rt, 1)
    assert resumed.id == run.id
    done = manual.run_to_completion(engine, rt, run.id, chunk_size=10)
    assert (done.state, done.scanned) == ("completed", N)
    rows = _outbox(engine)
    contacts_enqueued = [cid for cid, _ in rows]
    assert contacts_enqueued == sorted(_expected(engine))
    assert len({tid for _, tid in rows}) == len(rows)
    with engine.connect() as conn:
        entries = conn.execute(sa.select(sa.func.count()).select_from(t.automation_entries)).scalar_one()
    assert entries == len(rows)


def test_an_edit_during_the_run_applies_from_the_next_chunk(engine: sa.Engine) -> None:
    """The next chunk may have been scanned ahead under the old rule: it is scanned again."""
    rt = _runtime()
    with engine.begin() as conn:
        run = manual.start_run(conn, rt, 1)
        current = automations.get_automation(conn, 1)
    everyone = Group.model_validate(
        {"op": "and", "conditions": [{"type": "field", "subject": "lead_score", "op": "gte", "value": 0}]}
    )

    def edit_after_first_chunk(state: manual.ManualRunOut) -> None:
        if state.scanned == 30:
            with engine.begin() as conn:
                fields = current.model_dump(include=set(automations.AutomationIn.model_fields))
                data = automations.AutomationIn(**{**fields, "conditions": everyone})
                automations.update_automation(conn, rt, 1, data)

    done = manual.run_to_completion(engine, rt, run.id, chunk_size=30, on_progress=edit_after_first_chunk)
    assert (done.state, done.scanned) == ("completed", N)
    enqueued = [cid for cid, _ in _outbox(engine)]
    assert enqueued == sorted({c for c in _expected(engine) if c <= 30} | set(range(31, N + 1)))
