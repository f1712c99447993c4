"""Scale-out on PostgreSQL: 3 dispatcher processes share one outbox; no delivery has overlapping attempts.

The receiver records the interval of every request per transactionid; two attempts of one delivery
in flight at once (a double claim) would show as intersecting intervals.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from contactsync.db import create_engine
from contactsync.db import platform as t
from contactsync.db.migrate import upgrade
from support.delivery import CountingReceiver, enqueue_many, request, seed_action, workers

N = 3_000
PROCESSES = 3


@pytest.mark.slow
@pytest.mark.postgres
def test_three_dispatchers_share_the_outbox_without_overlap(pg_url: str, tmp_path: Path) -> None:
    upgrade(pg_url, side="platform")
    engine = create_engine(pg_url)
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        action_id = seed_action(conn, now=now, settings={"retry_schedule_s": [0] + [0.05] * 29})
    owners: set[str] = set()
    logs = [tmp_path / f"worker{i}.log" for i in range(PROCESSES)]
    with CountingReceiver(fail_ratio=0.2, seed=11, delay_s=0.02) as receiver:
        with workers(
            pg_url, logs, poll_interval_s=0.2, endpoint_concurrency=30, claim_batch_size=50
        ) as procs:
            enqueue_many(
                engine, [request(i, receiver.url, action_id=action_id) for i in range(1, N + 1)], now=now
            )
            deadline = time.monotonic() + 100
            while True:
                with engine.connect() as conn:
                    owners.update(
                        o.rsplit("/", 1)[0]
                        for o in conn.execute(
                            sa.select(t.deliveries.c.lease_owner)
                            .where(t.deliveries.c.lease_owner.is_not(None))
                            .distinct()
                        ).scalars()
                    )
                    delivered = conn.execute(
                        sa.select(sa.func.count()).where(t.deliveries.c.state == "delivered")
                    ).scalar_one()
                if delivered == N:
                    break
                assert time.monotonic() < deadline, f"stuck at {delivered} delivered"
                time.sleep(0.05)
        with receiver.lock:
            intervals = {tid: sorted(seen) for tid, seen in receiver.intervals.items()}
    engine.dispose()
    overlapping = [
        tid
        for tid, seen in intervals.items()
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(seen))
    ]
    requests = sum(len(seen) for seen in intervals.values())
    duplicates = sum(max(sum(ok for *_, ok in seen) - 1, 0) for seen in intervals.values())
    print(
        f"\nscale-out: {N} deliveries, {PROCESSES} processes, {requests} requests, {duplicates} duplicate 2xx"
    )
    assert [proc.returncode for proc in procs] == [0] * PROCESSES, [log.read_text()[-2000:] for log in logs]
    assert overlapping == []
    assert set(intervals) == {str(i) for i in range(1, N + 1)}
    assert all(any(ok for *_, ok in seen) for seen in intervals.values())
    assert duplicates == 0
    assert len(owners) == PROCESSES, owners
