"""Per-endpoint limits across processes (PostgreSQL): 3 ``contactsync worker`` processes share one
endpoint's in-flight cap and rate limit, and a killed worker's slots come back when their leases expire.

The receiver counts requests in flight (peak) and stamps every arrival. Checks are counts, never
durations: the peak never exceeds ``max_in_flight``; and no window of one second holds more arrivals
than the shared bucket allows to start in one second, ``burst + rate`` (the bucket starts full with
``burst = max(rate, 1)`` tokens and earns ``rate`` per second), plus ``JITTER_S`` worth of ``rate``
for starts that reach the receiver late or bunched. Per process, as before, 3 processes give 3× both.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import os
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiohttp import web

from contactsync.db import platform as t
from contactsync.db import shared_limits
from contactsync.db.shared_limits import SlotWant, TokenWant
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery.endpoints import EndpointKey, endpoint_key
from support.delivery import DEFAULT_ACCOUNT, ThreadedReceiver, enqueue_many, migrated, request, workers

pytestmark = pytest.mark.postgres

PROCESSES = 3
WORKER = {"poll_interval_s": 0.2, "claim_batch_size": 50}
JITTER_S = 0.5
"""Slack of the rate check: by how much more the delays between start and arrival of requests may
differ (a loaded machine delays some starts, bunching arrivals). Per process, 3 processes start up to
3 × (burst + rate) in the first second and 3 × rate in every later one, both well above the bound."""


class PeakReceiver(ThreadedReceiver):
    """A slow receiver: peak concurrency, arrival times, answered ids."""

    def __init__(self, *, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.in_flight = 0
        self.peak = 0
        self.arrivals: list[float] = []
        self.answered: set[str] = set()

    def span_s(self) -> float:
        """From the first arrival to the last (printed, never asserted)."""
        with self.lock:
            return max(self.arrivals) - min(self.arrivals) if self.arrivals else 0.0

    def max_in_window(self, window_s: float) -> int:
        """Most arrivals in any half-open window ``[a, a + window_s)`` (windows starting at an arrival)."""
        with self.lock:
            seen = sorted(self.arrivals)
        return max((bisect.bisect_left(seen, a + window_s) - i for i, a in enumerate(seen)), default=0)

    async def handle(self, request: web.Request) -> web.Response:
        with self.lock:
            self.arrivals.append(time.monotonic())
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            await request.read()
            await asyncio.sleep(self.delay_s)
        finally:
            with self.lock:
                self.in_flight -= 1
                self.answered.add(request.headers.get("webhook-id", "?"))
        return web.Response(text="ok")


def _limited(engine: sa.Engine, url: str, *, max_in_flight: int, rate_limit_per_s: float | None) -> None:
    key = EndpointKey(DEFAULT_ACCOUNT, endpoint_key(url))
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        endpoint_rows.ensure(conn, [key])
        endpoint_rows.set_limits(
            conn, key, max_in_flight=max_in_flight, rate_limit_per_s=rate_limit_per_s, now=now
        )


def _delivered(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).where(t.deliveries.c.state == "delivered")).scalar_one()
        )


def _wait_delivered(
    engine: sa.Engine, n: int, procs: list[subprocess.Popen[bytes]], logs: list[Path]
) -> None:
    deadline = time.monotonic() + 120
    while (done := _delivered(engine)) < n:
        alive = [p for p in procs if p.poll() is None]
        assert alive, [log.read_text()[-2000:] for log in logs]
        assert time.monotonic() < deadline, f"stuck at {done} of {n} delivered"
        time.sleep(0.1)


def _enqueue(engine: sa.Engine, url: str, n: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    enqueue_many(engine, [request(i, url) for i in range(1, n + 1)], now=now)


@pytest.mark.slow
def test_three_processes_share_the_in_flight_cap(pg_url: str, tmp_path: Path) -> None:
    n, cap = 200, 3
    engine = migrated(pg_url, now=datetime.now(UTC).replace(tzinfo=None))
    logs = [tmp_path / f"worker{i}.log" for i in range(PROCESSES)]
    with PeakReceiver(delay_s=0.1) as receiver:
        _limited(engine, receiver.url, max_in_flight=cap, rate_limit_per_s=None)
        with workers(pg_url, logs, **WORKER) as procs:
            _enqueue(engine, receiver.url, n)
            _wait_delivered(engine, n, procs, logs)
        codes = [p.returncode for p in procs]
    engine.dispose()
    print(
        f"\nshared cap: {n} deliveries, {PROCESSES} processes, cap {cap}, peak {receiver.peak} in flight, "
        f"{receiver.span_s():.1f} s from first to last arrival"
    )
    assert codes == [0] * PROCESSES, [log.read_text()[-2000:] for log in logs]
    assert receiver.answered == {str(i) for i in range(1, n + 1)}
    assert receiver.peak <= cap


@pytest.mark.slow
def test_three_processes_share_the_rate_limit(pg_url: str, tmp_path: Path) -> None:
    n, rate, cap = 200, 30.0, 8
    burst = max(rate, 1.0)
    allowed = math.floor(burst + rate * (1.0 + JITTER_S))
    engine = migrated(pg_url, now=datetime.now(UTC).replace(tzinfo=None))
    logs = [tmp_path / f"worker{i}.log" for i in range(PROCESSES)]
    with PeakReceiver(delay_s=0.1) as receiver:
        _limited(engine, receiver.url, max_in_flight=cap, rate_limit_per_s=rate)
        with workers(pg_url, logs, **WORKER) as procs:
            _enqueue(engine, receiver.url, n)
            _wait_delivered(engine, n, procs, logs)
        codes = [p.returncode for p in procs]
    engine.dispose()
    busiest = receiver.max_in_window(1.0)
    print(
        f"\nshared rate: {n} deliveries at {rate:g}/s, busiest second {busiest} (allowed {allowed}), "
        f"{receiver.span_s():.1f} s from first to last arrival"
    )
    assert codes == [0] * PROCESSES, [log.read_text()[-2000:] for log in logs]
    assert receiver.answered == {str(i) for i in range(1, n + 1)}
    assert receiver.peak <= cap
    assert busiest <= allowed


@pytest.mark.slow
def test_a_killed_workers_slots_expire_and_the_others_go_on(pg_url: str, tmp_path: Path) -> None:
    n, cap, slot_lease_s = 60, 3, 2.0
    engine = migrated(pg_url, now=datetime.now(UTC).replace(tzinfo=None))
    logs = [tmp_path / f"worker{i}.log" for i in range(PROCESSES)]
    s = t.endpoint_slots.c
    with PeakReceiver(delay_s=0.3) as receiver:
        _limited(engine, receiver.url, max_in_flight=cap, rate_limit_per_s=None)
        with workers(pg_url, logs, **WORKER, endpoint_slot_lease_s=slot_lease_s, lease_s=3.0) as procs:
            _enqueue(engine, receiver.url, n)
            deadline = time.monotonic() + 60
            victim: subprocess.Popen[bytes] | None = None
            while victim is None:
                assert time.monotonic() < deadline, "no worker took a slot"
                with engine.connect() as conn:
                    holders = set(conn.execute(sa.select(s.holder)).scalars())
                victim = next(
                    (
                        p
                        for p in procs
                        if any(h.startswith(f"{socket.gethostname()}:{p.pid}#") for h in holders)
                    ),
                    None,
                )
                time.sleep(0.02)
            prefix = f"{socket.gethostname()}:{victim.pid}#"
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            with engine.connect() as conn:
                stranded = conn.execute(sa.select(s.slot).where(s.holder.startswith(prefix))).scalars().all()
            _wait_delivered(engine, n, procs, logs)
            with engine.connect() as conn:
                still = conn.execute(
                    sa.select(s.slot, s.expires_at).where(
                        s.holder.startswith(prefix), s.expires_at > sa.func.timezone("UTC", sa.func.now())
                    )
                ).all()
        codes = [p.returncode for p in procs if p is not victim]
    engine.dispose()
    print(f"\nkilled worker: held slots {sorted(stranded)} at its death; peak {receiver.peak} in flight")
    assert stranded, "the killed worker held no slot: nothing was tested"
    assert codes == [0] * (PROCESSES - 1), [log.read_text()[-2000:] for log in logs]
    assert still == []
    assert receiver.answered == {str(i) for i in range(1, n + 1)}
    assert receiver.peak <= cap


def test_slots_have_one_holder_and_come_back_when_their_lease_expires(pg_url: str) -> None:
    engine = migrated(pg_url, now=datetime.now(UTC).replace(tzinfo=None))
    a, b = (DEFAULT_ACCOUNT, "http://a:1"), (DEFAULT_ACCOUNT, "http://b:1")
    with engine.begin() as conn:
        first = shared_limits.take_slots(conn, [SlotWant(a, 3, 5), SlotWant(b, 2, 1)], holder="A", lease_s=60)
    with engine.begin() as conn:
        none_left = shared_limits.take_slots(conn, [SlotWant(a, 3, 3)], holder="B", lease_s=60)
        assert shared_limits.release_slots(conn, [(a, first[0][1])], holder="B") == 0  # not B's
        assert shared_limits.release_slots(conn, [(a, first[0][1])], holder="A") == 1
        one_back = shared_limits.take_slots(conn, [SlotWant(a, 3, 3)], holder="B", lease_s=60)
        assert shared_limits.extend_slots(conn, holder="A", lease_s=0.2) == set(first[1:])
    time.sleep(0.3)  # A's leases lapse (A "died")
    with engine.begin() as conn:
        taken_over = shared_limits.take_slots(
            conn, [SlotWant(a, 3, 3), SlotWant(b, 2, 2)], holder="C", lease_s=60
        )
        assert shared_limits.extend_slots(conn, holder="A", lease_s=60) == set()  # lost, not renewed
        holders = conn.execute(
            sa.select(t.endpoint_slots.c.holder, sa.func.count()).group_by(t.endpoint_slots.c.holder)
        ).all()
    engine.dispose()
    assert sorted(n for k, n in first if k == a) == [0, 1, 2]
    assert [n for k, n in first if k == b] in ([0], [1])
    assert none_left == []
    assert one_back == [first[0]]
    assert sorted(taken_over) == [(a, 1), (a, 2), (b, 0), (b, 1)]
    assert dict(holders) == {"B": 1, "C": 4}


def test_the_shared_bucket_never_grants_more_than_burst_plus_refill(pg_url: str) -> None:
    engine = migrated(pg_url, now=datetime.now(UTC).replace(tzinfo=None))
    a = (DEFAULT_ACCOUNT, "http://a:1")
    started = time.monotonic()
    granted = 0
    with engine.begin() as conn:
        first = shared_limits.take_tokens(conn, [TokenWant(a, 5.0, 5.0, 3)])
    granted += first[a].granted
    for _ in range(20):
        with engine.begin() as conn:
            granted += shared_limits.take_tokens(conn, [TokenWant(a, 5.0, 5.0, 4)])[a].granted
    elapsed = time.monotonic() - started
    engine.dispose()
    assert first[a].granted == 3  # a new bucket starts full
    assert 5 <= granted <= 5 + math.ceil(5.0 * elapsed)
