"""Handlers survive their database and their own bugs: faults under load, then the backlog drains."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from contactsync.db import listener as t
from contactsync.db.engine import create_engine
from contactsync.errors import ConfigError
from contactsync.listener.app import create_app
from contactsync.listener.handlers import Runner
from contactsync.settings import Settings
from contactsync.wire.payload import SyncPayload
from support.listener import TOKEN, payload, serve

FAST_RETRIES_S = (0.0, *([0.2] * 50))
REFUSE = "attempt to write a readonly database"


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached"
        time.sleep(0.05)


def _count(engine: sa.Engine, query: sa.Select[Any]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _runs(engine: sa.Engine, state: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(t.handler_runs)
    return _count(engine, query if state is None else query.where(t.handler_runs.c.state == state))


@contextmanager
def _writes_to_runs_refused(engine: sa.Engine) -> Iterator[None]:
    """The database refuses every change to the handler runs table, as a read-only database does.

    Acknowledgements (inserts) go on, so the backlog grows while no run can be claimed or recorded.
    On PostgreSQL every connection of the listener is also killed as the fault begins.
    """
    if engine.dialect.name == "sqlite":
        on = [
            f"CREATE TRIGGER fault BEFORE UPDATE ON listener_handler_runs "
            f"BEGIN SELECT RAISE(ABORT, '{REFUSE}'); END"
        ]
        off = ["DROP TRIGGER fault"]
    else:
        on = [
            "CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{REFUSE}' USING ERRCODE = '25006'; END $$",
            "CREATE TRIGGER fault BEFORE UPDATE ON listener_handler_runs "
            "FOR EACH ROW EXECUTE FUNCTION fault()",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ]
        off = ["DROP TRIGGER fault ON listener_handler_runs", "DROP FUNCTION fault()"]
    with engine.begin() as conn:
        for statement in on:
            conn.exec_driver_sql(statement)
    try:
        yield
    finally:
        with engine.begin() as conn:
            for statement in off:
                conn.exec_driver_sql(statement)


class Load:
    """A sender that keeps posting new contacts and, like the platform, retries what was not acknowledged."""

    def __init__(self, sync_url: str) -> None:
        self.url = sync_url
        self.accepted: list[int] = []
        self.refused = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            number = 0
            while not self.stop.is_set():
                number += 1
                body = payload(10_000 + number, contact_id=number).to_form()
                while True:  # until acknowledged: a 503 (or a dropped connection) is retried
                    try:
                        if client.post(self.url, content=body).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    self.refused += 1
                    time.sleep(0.05)
                self.accepted.append(number)
                time.sleep(0.002)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def _health(client: httpx.Client, base: str) -> httpx.Response:
    return client.get(f"{base}/sync/{TOKEN}/health")


def test_after_a_database_fault_the_backlog_drains_without_a_restart(db_url: str) -> None:
    settings = Settings(listener_database_url=db_url, listener_token=TOKEN, listener_handler_stall_s=1.0)
    app = create_app(settings, schedule_s=FAST_RETRIES_S, poll_interval_s=0.05)
    engine = create_engine(db_url)
    with serve(app) as base, httpx.Client(timeout=30) as client, Load(f"{base}/sync/{TOKEN}") as load:
        _wait_for(lambda: _runs(engine, "done") >= 20, what="projection running")
        assert _health(client, base).status_code == 200
        with _writes_to_runs_refused(engine):
            before = len(load.accepted)
            _wait_for(lambda: _health(client, base).status_code == 503, what="503 while stalled")
            _wait_for(lambda: len(load.accepted) >= before + 50, what="backlog during the fault")
            stalled = _health(client, base).json()["handlers"]["sql"]
            assert stalled["worker"] == "stalled"
            assert REFUSE in stalled["last_error"]
            assert stalled["pending"] >= 50
        _wait_for(lambda: len(load.accepted) >= before + 80, what="load after the fault")
        load.stop.set()
        load.thread.join(60)
        _wait_for(
            lambda: _runs(engine, "done") == _runs(engine) == len(load.accepted), what="backlog drained"
        )
        answer = _health(client, base)
        assert answer.status_code == 200, answer.text
        healthy = answer.json()["handlers"]["sql"]
        assert (healthy["worker"], healthy["pending"], healthy["restarts"]) == ("running", 0, 0)
        assert _count(engine, sa.select(sa.func.count()).select_from(t.contacts)) == len(load.accepted)
    engine.dispose()


class Stuck:
    """A handler that never returns from its first call (a hung network call, say), then works."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[int] = []

    def __call__(self, sent: SyncPayload) -> None:
        self.calls.append(sent.transactionid)
        if len(self.calls) == 1:
            self.release.wait(120)


class LeaksCancellation:
    """An async handler whose first call lets a cancellation escape (as a closed client session can)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def __call__(self, sent: SyncPayload) -> None:
        self.calls.append(sent.transactionid)
        if len(self.calls) == 1:
            raise asyncio.CancelledError


@pytest.mark.parametrize("kind", ["stuck", "dies"])
def test_a_stuck_or_dead_worker_is_replaced_and_its_run_tried_again(sqlite_url: str, kind: str) -> None:
    handler: Stuck | LeaksCancellation = Stuck() if kind == "stuck" else LeaksCancellation()
    settings = Settings(listener_database_url=sqlite_url, listener_token=TOKEN, listener_handler_stall_s=1.0)
    app = create_app(settings, handlers={"custom": handler}, schedule_s=FAST_RETRIES_S, poll_interval_s=0.05)
    engine = create_engine(sqlite_url)
    try:
        with serve(app) as base, httpx.Client(timeout=30) as client:
            for tid in (501, 502, 503):
                sent = payload(tid, contact_id=tid).to_form()
                assert client.post(f"{base}/sync/{TOKEN}", content=sent).status_code == 200
            _wait_for(lambda: _runs(engine, "done") == 3, what="every run done")
            assert sorted(handler.calls) == [501, 501, 502, 503]  # the lost run was tried again
            shown = _health(client, base).json()["handlers"]["custom"]
            assert shown["restarts"] == 1
            assert ("stalled" if kind == "stuck" else "cancelled") in shown["last_error"]
            with engine.connect() as conn:
                attempts = conn.execute(
                    sa.select(t.handler_runs.c.attempts).where(t.handler_runs.c.state == "done")
                ).scalars()
                assert sorted(attempts) == [1, 1, 2]
    finally:
        if isinstance(handler, Stuck):
            handler.release.set()
        engine.dispose()


def test_handlers_only_process_survives_a_database_fault(db_url: str) -> None:
    """``contactsync listen --handlers-only`` runs the same workers: they back off and resume too."""
    from contactsync.listener.serve import run_handlers

    settings = Settings(
        listener_database_url=db_url,
        listener_token=TOKEN,
        listener_run_handlers=False,
        listener_handler_stall_s=1.0,
    )
    engine = create_engine(db_url)

    async def handlers_through_a_fault(sent: Callable[[int], None]) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_handlers(settings, stop=stop, poll_interval_s=0.05))
        while await asyncio.to_thread(_runs, engine, "done") < 5:
            await asyncio.sleep(0.05)
        with _writes_to_runs_refused(engine):
            await asyncio.to_thread(sent, 10)
            await asyncio.sleep(1.0)
        while await asyncio.to_thread(_runs, engine, "done") < 15:
            assert not task.done()
            await asyncio.sleep(0.05)
        stop.set()
        await task

    with serve(create_app(settings, poll_interval_s=0.05)) as base, httpx.Client() as client:
        first = iter(range(700, 800))

        def send(n: int) -> None:
            for _ in range(n):
                tid = next(first)
                body = payload(tid, contact_id=tid).to_form()
                while client.post(f"{base}/sync/{TOKEN}", content=body).status_code != 200:
                    time.sleep(0.05)  # the inbox's connection was killed with the others: sent again

        send(5)
        asyncio.run(asyncio.wait_for(handlers_through_a_fault(send), 90))
        assert _health(client, base).json()["handlers"]["sql"] == {
            "pending": 0,
            "lag_s": 0.0,
            "worker": "elsewhere",
        }
    assert _count(engine, sa.select(sa.func.count()).select_from(t.contacts)) == 15
    engine.dispose()


def test_a_stall_threshold_below_the_poll_interval_is_refused(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    with pytest.raises(ConfigError, match="stall threshold"):
        Runner(engine, {}, parse=lambda run: payload(1), poll_interval_s=1.0, stall_s=1.0)
    engine.dispose()
