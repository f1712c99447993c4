"""Helpers for the people tests: admin sessions planted directly in ``admin_sessions`` (the admin UI,
which makes them, is not driven here), and a delivery dispatcher running in a thread of its own."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from contactsync.db import platform as t
from contactsync.delivery.config import DispatcherConfig
from contactsync.delivery.dispatcher import Dispatcher
from contactsync.settings import Settings
from contactsync.tenancy.people import principal_of


def plant_session(engine: sa.Engine, user_id: int, account_id: int | None) -> str:
    """A signed-in session of the user working in ``account_id``, as the admin UI stores one; its id."""
    now = datetime.now(UTC).replace(tzinfo=None)
    ident = secrets.token_hex(32)
    with engine.begin() as conn:
        conn.execute(
            t.admin_sessions.insert().values(
                id=ident,
                principal=principal_of(user_id),
                csrf="csrf",
                password_tag="tag",
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(hours=1),
                account_id=account_id,
            )
        )
    return ident


def live_sessions(engine: sa.Engine, *idents: str) -> set[str]:
    """Which of these sessions still exist."""
    with engine.connect() as conn:
        query = sa.select(t.admin_sessions.c.id).where(t.admin_sessions.c.id.in_(idents))
        return set(conn.execute(query).scalars())


@contextmanager
def dispatching(engine: sa.Engine, **config: Any) -> Iterator[Dispatcher]:
    """A dispatcher claiming from ``engine`` in a thread with its own event loop, until the block ends
    (receivers on 127.0.0.1 allowed; the tests' secrets key opens what the API sealed)."""
    settings = Settings(allow_private_networks=True)
    dispatcher = Dispatcher(engine, config=DispatcherConfig.from_settings(settings, owner="tests", **config))
    started = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
        started.set()
        await dispatcher.run(stop=box["stop"])

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="dispatcher", daemon=True)
    thread.start()
    assert started.wait(30), "the dispatcher did not start"
    try:
        yield dispatcher
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(60)
        assert not thread.is_alive(), "the dispatcher did not stop"
