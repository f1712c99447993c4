"""The inbox writer's own driver connection: a broken one is replaced without losing or doubling a row."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from contactsync.db import listener as t
from contactsync.db.engine import create_engine
from contactsync.db.migrate import upgrade
from contactsync.listener.inbox import Inbox, InboxEntry, Stored


def _entry(tid: int) -> InboxEntry:
    return InboxEntry(str(tid), 1, "POST", "application/x-www-form-urlencoded", "", "{}", b"x", "127.0.0.1")


def test_a_broken_writer_connection_is_replaced_and_the_batch_still_commits(db_url: str) -> None:
    engine = create_engine(db_url)
    upgrade(engine, side="listener")

    async def run() -> list[Stored]:
        inbox = Inbox(engine, handler_names=["sql"])
        inbox.start()
        try:
            first = await inbox.store(_entry(1))
            held = inbox._held  # the writer thread's connection, kept between batches
            assert held is not None
            held.driver_connection.close()  # as if the server had dropped it
            rest = await asyncio.gather(inbox.store(_entry(2)), inbox.store(_entry(1)))
            return [first, *rest]
        finally:
            await inbox.close()

    first, second, again = asyncio.run(run())
    assert not first.duplicate
    assert not second.duplicate
    assert again.duplicate
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.inbox)).scalar_one() == 2
        assert conn.execute(sa.select(sa.func.count()).select_from(t.handler_runs)).scalar_one() == 2
    engine.dispose()


def test_batches_of_every_size_answer_in_order(db_url: str) -> None:
    """Multi-row statements are built per batch size; answers follow the entries' order."""
    engine = create_engine(db_url)
    upgrade(engine, side="listener")
    inbox = Inbox(engine, handler_names=[])
    tid = 100
    for size in (1, 2, 7, 64):
        batch = [_entry(tid + n) for n in range(size)]
        tid += size
        results = inbox.write([*batch, batch[0]])
        assert [r.duplicate for r in results] == [False] * size + [True]
        with engine.connect() as conn:
            query = sa.select(t.inbox.c.id, t.inbox.c.transactionid)
            stored = {row.id: row.transactionid for row in conn.execute(query)}
        assert [stored[r.inbox_id] for r in results[:-1] if r.inbox_id] == [e.transactionid for e in batch]
    engine.dispose()
