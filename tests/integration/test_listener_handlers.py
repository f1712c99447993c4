"""Inbox group commit, handler isolation and replay, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from contactsync.db import listener as t
from contactsync.db.engine import create_engine
from contactsync.db.migrate import upgrade
from contactsync.errors import ConfigError
from contactsync.listener.app import create_app
from contactsync.listener.handlers import Runner, load_handler, replay
from contactsync.listener.inbox import Inbox, InboxEntry, Stored
from contactsync.listener.projection import Projection
from contactsync.settings import Settings
from contactsync.wire.payload import SyncPayload
from support.listener import TOKEN, payload, serve

FAST_RETRIES_S = (0.0, *([0.05] * 200))


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _entry(tid: int) -> InboxEntry:
    return InboxEntry(str(tid), 1, "POST", "application/x-www-form-urlencoded", "", "{}", b"x", "127.0.0.1")


def test_concurrent_requests_share_one_commit_and_duplicates_are_stored_once(db_url: str) -> None:
    engine = create_engine(db_url)
    upgrade(engine, side="listener")
    tids = [1000 + n % 150 for n in range(200)]

    async def burst() -> tuple[Inbox, list[Stored]]:
        inbox = Inbox(engine, handler_names=["sql", "crm"])
        inbox.start()
        try:
            return inbox, list(await asyncio.gather(*(inbox.store(_entry(tid)) for tid in tids)))
        finally:
            await inbox.close()

    inbox, results = asyncio.run(burst())
    assert inbox.commits == 1
    stored = [tid for tid, r in zip(tids, results, strict=True) if not r.duplicate]
    assert sorted(stored) == sorted(set(tids))
    assert sum(r.duplicate for r in results) == 50
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.inbox)).scalar_one() == 150
        assert conn.execute(sa.select(sa.func.count()).select_from(t.handler_runs)).scalar_one() == 300
    # another inbox (another process) sees the first one's rows as duplicates
    again = Inbox(engine, handler_names=["sql"])
    first = again.write([_entry(1000), _entry(9999)])
    assert first[0] == Stored(None, True)
    assert not first[1].duplicate
    assert again.write([_entry(9999)]) == [Stored(None, True)]
    engine.dispose()


class FlakyCRM:
    """Stands in for a CRM endpoint that is down until told otherwise."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.down.set()
        self.received: list[int] = []

    def __call__(self, payload: SyncPayload) -> None:
        if self.down.is_set():
            raise ConnectionError("CRM unreachable")
        self.received.append(payload.transactionid)


def _done(engine: sa.Engine, handler: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    t.handler_runs.c.handler == handler, t.handler_runs.c.state == "done"
                )
            ).scalar_one()
        )


def _crm_errors(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        query = sa.select(t.handler_runs.c.last_error).where(t.handler_runs.c.handler == "crm")
        return " ".join(e or "" for e in conn.execute(query).scalars())


def test_a_crm_that_is_down_does_not_delay_the_projection_and_catches_up(db_url: str) -> None:
    crm = FlakyCRM()
    projection = Projection(db_url, clock_ms=lambda: int(time.time() * 1000))
    settings = Settings(listener_database_url=db_url, listener_token=TOKEN)
    app = create_app(
        settings, handlers={"sql": projection, "crm": crm}, schedule_s=FAST_RETRIES_S, poll_interval_s=0.05
    )
    engine = create_engine(db_url)
    with serve(app) as base, httpx.Client() as client:
        for n in range(20):
            sent = payload(5000 + n, contact_id=n)
            assert client.post(f"{base}/sync/{TOKEN}", content=sent.to_form()).status_code == 200
        _wait_for(lambda: _done(engine, "sql") == 20)
        assert _done(engine, "crm") == 0
        _wait_for(lambda: "CRM unreachable" in _crm_errors(engine))
        crm.down.clear()
        _wait_for(lambda: _done(engine, "crm") == 20)
    assert sorted(crm.received) == [5000 + n for n in range(20)]
    engine.dispose()


def test_replay_runs_one_entry_through_one_handler_again(db_url: str) -> None:
    seen: list[int] = []
    settings = Settings(listener_database_url=db_url, listener_token=TOKEN, listener_projection=False)
    app = create_app(
        settings, handlers={"audit": lambda p: seen.append(p.transactionid)}, poll_interval_s=0.05
    )
    engine = create_engine(db_url)
    with serve(app) as base, httpx.Client() as client:
        for tid in (71, 72):
            client.post(f"{base}/sync/{TOKEN}", content=payload(tid).to_form())
        _wait_for(lambda: _done(engine, "audit") == 2)
        replay(engine, "72", "audit")
        _wait_for(lambda: len(seen) == 3)
        replay(engine, "71", "newcomer")  # a handler added later gets its run created
        with engine.connect() as conn:
            assert (
                conn.execute(
                    sa.select(t.handler_runs.c.state).where(t.handler_runs.c.handler == "newcomer")
                ).scalar_one()
                == "pending"
            )
    assert sorted(seen) == [71, 72, 72]
    engine.dispose()


def test_handlers_load_by_dotted_path_and_unknown_names_fail_clearly() -> None:
    assert load_handler("contactsync.listener.library:parse").__name__ == "parse"  # type: ignore[attr-defined]
    assert load_handler("contactsync.listener.library.parse").__name__ == "parse"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError):
        load_handler("no_such_module_xyz.handler")
    with pytest.raises(ConfigError):
        load_handler("nothing")


def test_several_workers_on_one_database_never_run_a_handler_twice(db_url: str) -> None:
    engine = create_engine(db_url)
    upgrade(engine, side="listener")
    body = payload(1).to_form().encode()
    Inbox(engine, handler_names=["h"]).write(
        [InboxEntry(str(n + 1), 1, "POST", "", "", "{}", body, "") for n in range(60)]
    )

    def parse(run: object) -> SyncPayload:
        return payload(1)

    runners = [Runner(engine, {"h": lambda p: None}, parse=parse, batch_size=7) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        claimed = [r.id for batch in pool.map(lambda r: r.claim("h"), runners * 4) for r in batch]
    assert len(claimed) == len(set(claimed))
    while rest := runners[0].claim("h"):
        claimed += [r.id for r in rest]
    assert len(claimed) == len(set(claimed)) == 60
    engine.dispose()


def test_handlers_can_run_in_their_own_process(db_url: str) -> None:
    """A split listener: acknowledging processes with handlers off, one handlers-only process beside them."""
    from contactsync.listener.serve import run_handlers

    settings = Settings(listener_database_url=db_url, listener_token=TOKEN, listener_run_handlers=False)
    engine = create_engine(db_url)
    with serve(create_app(settings, poll_interval_s=0.05)) as base, httpx.Client() as client:
        for tid in range(900, 905):
            assert client.post(
                f"{base}/sync/{TOKEN}", content=payload(tid, contact_id=tid).to_form()
            ).is_success
    assert _done(engine, "sql") == 0

    async def handlers_until_done() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_handlers(settings, stop=stop, poll_interval_s=0.05))
        while await asyncio.to_thread(_done, engine, "sql") < 5:
            await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(handlers_until_done(), 60))
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.contacts)).scalar_one() == 5
    engine.dispose()


class GatedProjection(Projection):
    """The SQL projection, held back until ``gate`` opens: a projection far behind the acknowledgements."""

    def __init__(self, url: str) -> None:
        super().__init__(url, clock_ms=lambda: int(time.time() * 1000))
        self.gate = threading.Event()
        self.batches = 0

    def handle_batch(self, payloads: Sequence[SyncPayload]) -> list[Exception | None]:
        self.gate.wait(120)
        self.batches += 1
        return super().handle_batch(payloads)


def test_acknowledgements_do_not_wait_for_the_projection_which_catches_up_after_a_burst(db_url: str) -> None:
    burst = 300
    projection = GatedProjection(db_url)
    settings = Settings(listener_database_url=db_url, listener_token=TOKEN)
    app = create_app(settings, handlers={"sql": projection}, poll_interval_s=0.05)
    engine = create_engine(db_url)

    async def post_all(base: str) -> list[int]:
        limit = asyncio.Semaphore(32)
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(n: int) -> int:
                async with limit:
                    body = payload(9000 + n, contact_id=n).to_form()
                    return (await client.post(f"{base}/sync/{TOKEN}", content=body)).status_code

            return list(await asyncio.gather(*(one(n) for n in range(burst))))

    with serve(app) as base:
        assert asyncio.run(post_all(base)) == [200] * burst  # every one stored and acknowledged...
        assert _done(engine, "sql") == 0  # ...while the projection had not merged any of them
        projection.gate.set()
        _wait_for(lambda: _done(engine, "sql") == burst)
        with engine.connect() as conn:
            merged = conn.execute(sa.select(sa.func.count()).select_from(t.contacts)).scalar_one()
            pending = conn.execute(
                sa.select(sa.func.count()).where(t.handler_runs.c.state != "done")
            ).scalar_one()
    assert (merged, pending) == (burst, 0)
    assert projection.batches < burst  # merged in batches, not one transaction per entry
    engine.dispose()
