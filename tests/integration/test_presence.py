"""Is anything sending? A running dispatcher is seen; deliveries due with none alive are reported."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from contactsync.db import platform as t
from contactsync.delivery.config import DispatcherConfig
from contactsync.delivery.dispatcher import Dispatcher
from contactsync.delivery.presence import beat, stall
from support.delivery import enqueue_many, request
from support.listener import wait_for

NOW = datetime(2026, 3, 1, 12, 0, 0)


@pytest.fixture
def migrated_at() -> datetime:
    return NOW


def _stall(engine: sa.Engine, now: datetime) -> object:
    with engine.connect() as conn:
        return stall(conn, now=now)


def test_due_deliveries_without_a_dispatcher_are_reported(engine: sa.Engine) -> None:
    assert _stall(engine, NOW) is None  # nothing due: nothing to say
    enqueue_many(engine, [request(1, "http://127.0.0.1:9/hook")], now=NOW)
    found = _stall(engine, NOW)
    assert found is not None
    assert "1 deliveries are due and no dispatcher is running (none ever ran)" in str(found)
    with engine.begin() as conn:
        beat(conn, "w1", started_at=NOW, now=NOW)
    assert _stall(engine, NOW + timedelta(seconds=30)) is None  # seen half a minute ago: alive
    late = _stall(engine, NOW + timedelta(seconds=90))
    assert late is not None
    assert "last seen 2026-03-01 12:00:00 UTC" in str(late)
    with engine.begin() as conn:  # a dispatcher gone for a day is forgotten by the next one's beat
        beat(conn, "w2", started_at=NOW, now=NOW + timedelta(days=2))
        owners = conn.execute(sa.select(t.dispatchers.c.owner)).scalars().all()
    assert owners == ["w2"]


def test_a_running_dispatcher_is_seen_and_says_when_it_stops(engine: sa.Engine) -> None:
    config = DispatcherConfig(owner="test-dispatcher", poll_interval_s=0.05, metrics_interval_s=0.05)
    dispatcher = Dispatcher(engine, config=config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(dispatcher.run(),), daemon=True)
    thread.start()

    def seen() -> bool:
        with engine.connect() as conn:
            return conn.execute(sa.select(t.dispatchers.c.owner)).scalars().all() == ["test-dispatcher"]

    try:
        wait_for(seen)
    finally:
        dispatcher.stop()
        thread.join(timeout=30)
        loop.close()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.dispatchers)).scalar_one() == 0
