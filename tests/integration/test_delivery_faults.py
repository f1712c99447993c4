"""No loss under faults: 5,000 deliveries, the dispatcher killed with SIGKILL twice, 30 % receiver errors.

The dispatcher runs as a real ``contactsync worker`` subprocess; the receiver runs in this process.
Afterwards every delivery is delivered and the receiver has seen each transactionid answered 2xx
at least once; duplicates (attempts whose result died with the dispatcher) are counted and printed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from contactsync.db import create_engine
from contactsync.db import platform as t
from contactsync.db.migrate import upgrade
from support.delivery import CountingReceiver, enqueue_many, request, seed_action, worker_env

N = 5_000
CHUNK = 500
SCHEDULE = [0, 0.1, 0.2, 0.3] + [0.5] * 26  # 30 attempts: 0.3 ** 30 ≈ 2e-16 chance of running out


def _start(db_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = worker_env(
        db_url, lease_s=2, poll_interval_s=0.2, endpoint_concurrency=50, dispatcher_concurrency=100
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "contactsync", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _count(engine: sa.Engine, state: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(t.deliveries.c.state == state)).scalar_one())


@pytest.mark.slow
def test_no_loss_with_kill_9_and_a_failing_receiver(db_url: str, tmp_path: Path) -> None:
    upgrade(db_url, side="platform")
    engine = create_engine(db_url)
    log = tmp_path / "worker.log"
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        action_id = seed_action(conn, now=now, settings={"retry_schedule_s": SCHEDULE})
    kills = 0
    with CountingReceiver(fail_ratio=0.3, seed=5) as receiver:
        worker = _start(db_url, log)
        try:
            deadline = time.monotonic() + 110
            enqueued = 0
            while _count(engine, "delivered") < N:
                assert time.monotonic() < deadline, f"stuck: {_count(engine, 'delivered')} delivered"
                if enqueued < N:  # deliveries keep flowing in while the dispatcher works
                    batch = [
                        request(i, receiver.url, action_id=action_id)
                        for i in range(enqueued + 1, enqueued + CHUNK + 1)
                    ]
                    enqueue_many(engine, batch, now=datetime.now(UTC).replace(tzinfo=None))
                    enqueued += CHUNK
                if kills < 2 and receiver.successes() >= (kills + 1) * N // 3:
                    worker.send_signal(signal.SIGKILL)
                    worker.wait(30)
                    kills += 1
                    worker = _start(db_url, log)
                time.sleep(0.1)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(30)
        delivered_at_receiver = receiver.delivered()
        with receiver.lock:
            requests = sum(len(v) for v in receiver.intervals.values())
            duplicates = sum(max(sum(ok for _, _, ok in v) - 1, 0) for v in receiver.intervals.values())
    with engine.connect() as conn:
        states: dict[str, int] = dict(
            conn.execute(
                sa.select(t.deliveries.c.state, sa.func.count()).group_by(t.deliveries.c.state)
            ).all()
        )
        attempts = conn.execute(sa.select(sa.func.count()).select_from(t.delivery_attempts)).scalar_one()
    engine.dispose()
    print(
        f"\nfault test: {N} deliveries, {kills} kill -9, {requests} requests at the receiver, "
        f"{attempts} attempts recorded, {duplicates} duplicate 2xx deliveries"
    )
    assert kills == 2
    assert code == 0, log.read_text()[-3000:]
    assert states == {"delivered": N}
    assert delivered_at_receiver == {str(i) for i in range(1, N + 1)}
