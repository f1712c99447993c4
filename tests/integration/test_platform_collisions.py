"""Two processes handing out the same transactionid: the event path and manual runs retry once.

The clash is forced: two generators share one frozen clock and the same sequence offset, so the
second "process" draws exactly the ids the first one already committed.
"""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa

from contactsync.automation import actions as act
from contactsync.automation import automations, events, lists, manual
from contactsync.automation.action_settings import SyncActionSettings
from contactsync.automation.activity import CampaignOpened
from contactsync.automation.rules import Reentry, TriggerSpec
from contactsync.automation.runtime import Runtime
from contactsync.db import create_engine
from contactsync.db import platform as t
from contactsync.db.migrate import upgrade
from contactsync.errors import DuplicateKeyError
from contactsync.settings import Settings
from contactsync.wire.transactionid import SEQUENCE_BITS, TransactionIdGenerator

T0 = datetime(2026, 6, 1, 8, 0, 0)
FROZEN_MS = 1_780_000_000_000


def _process() -> Runtime:
    """A runtime whose ids are exactly those of every other runtime made here."""
    return Runtime(clock=lambda: T0, ids=TransactionIdGenerator(clock_ms=lambda: FROZEN_MS))


def _seed(url: str, trigger: str) -> tuple[sa.Engine, int]:
    upgrade(url)
    engine = create_engine(url)
    rt = Runtime(clock=lambda: T0, ids=TransactionIdGenerator(clock_ms=lambda: FROZEN_MS - 1000))
    with engine.begin() as conn:
        account = lists.create_account(conn, name="a", now=T0)
        lst = lists.create_list(conn, lists.ListIn(account_id=account, name="l"), now=T0)
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
                    "lead_score": 0,
                    "created_at": T0,
                    "updated_at": T0,
                }
                for i in range(1, 5)
            ],
        )
        auto = automations.create_automation(
            conn,
            rt,
            automations.AutomationIn(
                list_id=lst.id, name="m", trigger=TriggerSpec(event=trigger), reentry=Reentry(policy="always")
            ),
        )
        settings = SyncActionSettings(url="https://h.test/?tid=[#TRANSACTIONID#]")
        act.create_action(conn, rt, automation_id=auto.id, settings=settings)
    return engine, auto.id


def _opened(*contact_ids: int) -> list[CampaignOpened]:
    return [CampaignOpened(kind="campaign.opened", contact_id=cid, campaign_id=3) for cid in contact_ids]


def _outbox(engine: sa.Engine) -> list[tuple[int, int, str, bytes]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                t.deliveries.c.transactionid,
                t.deliveries.c.contact_id,
                t.deliveries.c.url,
                t.deliveries.c.body,
            ).order_by(t.deliveries.c.transactionid)
        )
        return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]


def test_event_path_retries_with_fresh_ids_after_a_clash(db_url: str) -> None:
    engine, _ = _seed(db_url, "campaign.opened")
    first, second = _process(), _process()
    with engine.begin() as conn:
        done = events.ingest_events(conn, first, _opened(1))
    with engine.begin() as conn:
        clashed = events.ingest_events(conn, second, _opened(2))
    assert clashed.transactionids == [done.transactionids[0] + 1]  # the retry's id, still monotonic
    rows = _outbox(engine)
    assert [(tid, cid) for tid, cid, _, _ in rows] == [
        (done.transactionids[0], 1),
        (clashed.transactionids[0], 2),
    ]
    for tid, _, url, body in rows:  # the retried delivery carries its new id in URL and body
        assert url == f"https://h.test/?tid={tid}"
        assert body.startswith(f"transactionid={tid}&contact".encode())
    with engine.connect() as conn:  # the event and the entry were written once, with the delivery
        assert conn.execute(sa.select(sa.func.count()).select_from(t.automation_entries)).scalar_one() == 2
    engine.dispose()


def test_a_second_clash_aborts_the_transaction(db_url: str) -> None:
    engine, _ = _seed(db_url, "campaign.opened")
    first, second = _process(), _process()
    with engine.begin() as conn:
        events.ingest_events(conn, first, _opened(1, 2))  # takes the retry's id as well
    with pytest.raises(DuplicateKeyError, match="transactionid"), engine.begin() as conn:
        events.ingest_events(conn, second, _opened(3))
    assert [cid for _, cid, _, _ in _outbox(engine)] == [1, 2]
    with engine.connect() as conn:  # nothing of the failed batch was committed
        opened = sa.select(sa.func.count()).where(t.activities.c.kind == "campaign_open")
        assert conn.execute(opened).scalar_one() == 2
    engine.dispose()


def test_manual_run_retries_with_fresh_ids_after_a_clash(db_url: str) -> None:
    engine, automation_id = _seed(db_url, "manual")
    first, second = _process(), _process()
    first.ids.next()  # a delivery made elsewhere: its id is the one the run draws first
    with engine.begin() as conn:
        conn.execute(
            t.deliveries.insert().values(
                transactionid=first.ids.last,
                account_id=conn.execute(sa.select(sa.func.min(t.accounts.c.id))).scalar_one(),
                endpoint="https://h.test:443",
                method="GET",
                url="https://h.test/",
                headers={},
                body=b"",
                content_type="",
                state="pending",
                attempt_count=0,
                next_attempt_at=T0,
                created_at=T0,
                updated_at=T0,
            )
        )
        run = manual.start_run(conn, second, automation_id)
    done = manual.run_to_completion(engine, second, run.id, chunk_size=2)
    assert (done.state, done.matched, done.enqueued) == ("completed", 4, 4)
    tids = [tid for tid, _, _, _ in _outbox(engine)]
    assert len(set(tids)) == 5
    assert tids[0] == first.ids.last
    engine.dispose()


def test_processes_get_different_sequence_offsets() -> None:
    offsets = {Runtime.create(Settings()).ids.next() & ((1 << SEQUENCE_BITS) - 1) for _ in range(8)}
    assert len(offsets) > 1  # random per process (8 equal draws of 65536: never in practice)
    fixed = Runtime.create(Settings(), clock_ms=lambda: FROZEN_MS, sequence_offset=7)
    assert [fixed.ids.next() & 0xFFFF for _ in range(3)] == [7, 8, 9]
