"""Delivery throughput and latency: our durable dispatcher against a bare aiohttp loop and a Celery worker.

One local sink (uvicorn on 127.0.0.1, a raw ASGI app answering 200) receives N signed form POSTs
(~300 bytes, the same bytes and headers for every contestant):

* ``ours``: ``contactsync worker`` process(es) draining N outbox rows committed in one transaction —
  on SQLite (one process) and on PostgreSQL (1 and 2 processes); timed from the commit to the last
  row marked delivered in the database (every attempt recorded, every state change committed);
* ``bare``: one asyncio loop (uvloop, as the worker's) posting the same requests with aiohttp at the
  same concurrency, no durability at all — the Python ceiling;
* ``celery``: a Celery worker (Redis broker, prefork, ``requests``) sending them — what a Python team
  would build; timed from the first ``apply_async`` to the last task done.

Then the latency from event commit to first attempt, with events committed one per transaction at
500/s: on PostgreSQL (worker process woken by LISTEN/NOTIFY) and on SQLite (dispatcher in-process,
woken by its in-process signal, as ``contactsync serve`` runs it). Prints every goal line of issue 13
with its figure: deliveries/s and the ratios ``ours / bare`` (goal ≥ 0.7 on SQLite x1 and PostgreSQL
x2) and ``ours / celery`` (goal ≥ 8), the sender CPU per delivery of ours and of the bare loop (goal
≤ 250 µs: the figure that does not swing with the neighbours), for PostgreSQL the server's CPU per
delivery (the workers' backends, from /proc), and the sink's CPU (is it the bottleneck?). Throughput
runs in ``--rounds`` interleaved rounds, the best of each kept. ``--sustained`` then holds 70 % of each
measured peak of ours for ``--sustained-seconds`` (60) and prints p50/p99 of enqueue → received and
whether the outbox backlog grew.

Last, the chain latency: N deliveries of one ordered (action, contact) committed together, each
allowed out only once the previous one is recorded. Wall time / N against one bare round trip
(aiohttp, one request at a time): a dispatcher that wakes on each recorded delivery stays at a few
round trips per link; one that waits for its poll interval shows as poll interval / round trip.

Run: ``python bench/delivery.py [--n 20000] [--concurrency 100] [--rounds 3] [--skip-celery] [--sustained]
[--only throughput,latency,chain]``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

BENCH_DIR = Path(__file__).resolve().parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PG_ADMIN_URL = os.environ.get("CONTACTSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/15")
CELERY_QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench-delivery")
DONE_KEY = f"{CELERY_QUEUE}:done"
CLIENT_CPU_US: dict[str, float] = {}
"""CPU per delivery of the sending process(es), by contestant (the lowest of the rounds)."""
SERVER_CPU_US: dict[str, float] = {}
"""PostgreSQL server CPU per delivery (its backends serving the workers), by contestant."""
WORKER_APP = "contactsync-bench-worker"
"""``application_name`` of the workers' connections: how their server backends are found."""
SENDER_GOAL_US = 250
RATIO_GOAL = 0.7
CELERY_GOAL = 8


def keep_lowest(table: dict[str, float], key: str, value: float) -> None:
    table[key] = min(value, table.get(key, value))


def body_of(tid: int) -> bytes:
    return (
        f"transactionid={tid}&contact%5Bid%5D={tid}&contact%5Bemail%5D=user{tid}%40example.com"
        "&contact%5Bfirst_name%5D=Jane&contact%5Blast_name%5D=Doe&contact%5Bphone%5D=%2B15555550100"
        "&fields%5Bcompany%5D=Acme+Inc.&fields%5Bcity%5D=Springfield&fields%5Bplan%5D=gold"
        "&lead_score=42&lead_status=warm&automation%5Bid%5D=7&automation%5Bname%5D=Sync+to+CRM"
    ).encode()


def signed_headers(tid: int, body: bytes) -> dict[str, str]:
    from contactsync import __version__
    from contactsync.wire import signing

    return {
        "User-Agent": f"contactsync/{__version__}",
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Api-Key": "k",
        **signing.headers([SECRET], msg_id=str(tid), timestamp=int(time.time()), content=body),
    }


# --- the sink (run by uvicorn in its own process) ---------------------------------------------------


_RECEIVED = (
    open(os.environ["BENCH_SINK_LOG"], "a", buffering=1)  # noqa: SIM115 - open for the process's life
    if os.environ.get("BENCH_SINK_LOG")
    else None
)
"""The sustained run's sink notes ``<webhook-id> <unix time>`` per request received."""


async def sink(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """Raw ASGI: read the body, answer 200."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if _RECEIVED is not None:
        msg_id = next((v for k, v in scope["headers"] if k == b"webhook-id"), b"?")
        _RECEIVED.write(f"{msg_id.decode()} {time.time()}\n")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sink(record_to: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "BENCH_SINK_LOG": record_to} if record_to else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "delivery:sink", "--app-dir", str(BENCH_DIR), "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning", "--backlog", "2048"],
        env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("sink did not start") from None
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}/hook"


# --- Celery contestant -----------------------------------------------------------------------------

try:
    from celery import Celery

    celery_app = Celery("bench_delivery", broker=BROKER_URL)
    celery_app.conf.update(
        task_default_queue=CELERY_QUEUE,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    _http: Any = None
    _redis: Any = None

    def _celery_send(url: str, tid: int) -> None:
        global _http, _redis
        import redis
        import requests

        if _http is None:
            _http = requests.Session()
            _redis = redis.Redis.from_url(BROKER_URL)
        body = body_of(tid)
        response = _http.post(url, data=body, headers=signed_headers(tid, body), timeout=15)
        response.raise_for_status()
        _redis.incr(DONE_KEY)

    # applied as a call: celery is untyped, and the task keeps its plain, typed function
    celery_send = celery_app.task(name="bench.delivery.send")(_celery_send)

except ImportError:  # pragma: no cover - celery is a test extra
    celery_app = None


def run_celery(url: str, n: int, *, concurrency: int) -> float:
    import redis

    r = redis.Redis.from_url(BROKER_URL)
    r.delete(DONE_KEY, CELERY_QUEUE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")])}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "delivery:celery_app", "worker", "-P", "prefork",
         "-c", str(concurrency), "-Q", CELERY_QUEUE, "--without-gossip", "--without-mingle",
         "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=BENCH_DIR, env=env,
    )  # fmt: skip
    try:
        celery_send.apply_async(args=(url, 0))  # warm-up: worker up, pools connected
        wait_until(lambda: int(r.get(DONE_KEY) or 0) >= 1, what="celery warm-up", timeout_s=60)
        r.set(DONE_KEY, 0)
        started = time.perf_counter()
        for tid in range(1, n + 1):
            celery_send.apply_async(args=(url, tid))
        wait_until(lambda: int(r.get(DONE_KEY) or 0) >= n, what="celery tasks", timeout_s=600, poll_s=0.05)
        return n / (time.perf_counter() - started)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        r.delete(DONE_KEY, CELERY_QUEUE)


# --- bare aiohttp loop -----------------------------------------------------------------------------


def run_bare(url: str, n: int, *, concurrency: int) -> float:
    import aiohttp

    async def main() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            ids = iter(range(1, n + 1))

            async def lane() -> None:
                for tid in ids:
                    body = body_of(tid)
                    async with session.post(url, data=body, headers=signed_headers(tid, body)) as response:
                        await response.read()
                        assert response.status == 200

            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(lane() for _ in range(concurrency)))
            keep_lowest(CLIENT_CPU_US, "bare aiohttp loop", (time.process_time() - cpu) / n * 1e6)
            return n / (time.perf_counter() - started)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the worker's loop too
        return runner.run(main())


# --- our dispatcher --------------------------------------------------------------------------------


def wait_until(check: Callable[[], bool], *, what: str, timeout_s: float, poll_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(poll_s)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def prepare_db(url: str) -> tuple[Any, int]:
    from contactsync.db import create_engine
    from contactsync.db import platform as t
    from contactsync.db.migrate import upgrade

    upgrade(url, side="platform")
    engine = create_engine(url)
    now = utcnow()
    with engine.begin() as conn:
        account = conn.execute(
            t.accounts.insert().values(name="b", created_at=now).returning(t.accounts.c.id)
        )
        lst = conn.execute(
            t.lists.insert()
            .values(account_id=account.scalar_one(), name="l", created_at=now)
            .returning(t.lists.c.id)
        )
        automation = conn.execute(
            t.automations.insert()
            .values(list_id=lst.scalar_one(), name="a", trigger="contact.created", conditions={},
                    created_at=now, updated_at=now)
            .returning(t.automations.c.id)
        )  # fmt: skip
        action = conn.execute(
            t.actions.insert()
            .values(automation_id=automation.scalar_one(), settings={}, secret=SECRET, endpoint="bench",
                    created_at=now, updated_at=now)
            .returning(t.actions.c.id)
        )  # fmt: skip
        action_id = int(action.scalar_one())
    return engine, action_id


def requests_for(url: str, action_id: int, tids: range) -> list[Any]:
    """Requests of the bench action (its account is the database's only one: id 1)."""
    from contactsync.delivery.endpoints import endpoint_key
    from contactsync.delivery.outbox import OutboxRequest

    endpoint = endpoint_key(url)
    return [
        OutboxRequest(
            transactionid=tid, account_id=1, endpoint=endpoint, method="POST", url=url, body=body_of(tid),
            content_type="application/x-www-form-urlencoded", headers={"X-Api-Key": "k"}, action_id=action_id,
        )
        for tid in tids
    ]  # fmt: skip


def delivered(engine: Any) -> int:
    import sqlalchemy as sa

    from contactsync.db import platform as t

    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).where(t.deliveries.c.state == "delivered")).scalar_one()
        )


SECRETS_KEY = ""
"""The workers' secrets-at-rest key (one per bench run: every process sharing a database needs it)."""


def worker_env(db_url: str, concurrency: int, *, poll_interval_s: float = 0.5) -> dict[str, str]:
    global SECRETS_KEY
    if not SECRETS_KEY:
        from contactsync.db.sealing import generate_key

        SECRETS_KEY = generate_key()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    env.update(
        CONTACTSYNC_DATABASE_URL=db_url,
        CONTACTSYNC_SECRETS_KEY=SECRETS_KEY,
        PGAPPNAME=WORKER_APP,
        CONTACTSYNC_ALLOWED_CIDRS=json.dumps(["127.0.0.1/32"]),
        CONTACTSYNC_DISPATCHER_CONCURRENCY=str(concurrency),
        CONTACTSYNC_ENDPOINT_CONCURRENCY=str(concurrency),
        CONTACTSYNC_CLAIM_BATCH_SIZE="200",
        CONTACTSYNC_POLL_INTERVAL_S=str(poll_interval_s),
    )
    return env


class ServerCpu:
    """CPU time of the PostgreSQL backends serving the workers (``/proc/<pid>/stat``; the server runs
    on this machine). ``pg_stat_statements`` would give the statements' time, not the process's: it
    leaves out parsing, commits and the protocol, which are the point here."""

    def __init__(self, admin_url: str, database: str) -> None:
        import psycopg

        self._conn = psycopg.connect(admin_url, autocommit=True)
        self._database = database
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}

    def sample(self) -> None:
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (self._database, WORKER_APP),
        ).fetchall()
        for (pid,) in rows:
            cpu = cpu_seconds(pid)
            if cpu is not None:
                self._first.setdefault(pid, cpu)
                self._last[pid] = cpu

    def start(self) -> None:
        self.sample()
        self._first = dict(self._last)

    def spent(self) -> float:
        """Seconds used since :meth:`start` (a backend first seen later counts from its start)."""
        self.sample()
        return sum(last - self._first.get(pid, 0.0) for pid, last in self._last.items())

    def close(self) -> None:
        self._conn.close()


def run_ours(db_url: str, sink_url: str, n: int, *, processes: int, concurrency: int) -> float:
    from contactsync.delivery.outbox import enqueue

    engine, action_id = prepare_db(db_url)
    workers = [
        subprocess.Popen([sys.executable, "-m", "contactsync", "worker"], env=worker_env(db_url, concurrency))
        for _ in range(processes)
    ]
    try:
        with engine.begin() as conn:  # warm-up: processes up, pools connected
            enqueue(conn, requests_for(sink_url, action_id, range(1, processes + 1)), now=utcnow())
        wait_until(lambda: delivered(engine) == processes, what="warm-up", timeout_s=60)
        batch = requests_for(sink_url, action_id, range(processes + 1, processes + n + 1))
        server = None
        if engine.dialect.name == "postgresql":
            server = ServerCpu(PG_ADMIN_URL, engine.url.database)
            server.start()
        started, cpu = time.perf_counter(), [cpu_seconds(w.pid) for w in workers]
        with engine.begin() as conn:
            enqueue(conn, batch, now=utcnow())

        def done() -> bool:
            if server is not None:
                server.sample()  # a backend that ends before the last sample still counts
            return delivered(engine) == processes + n

        wait_until(done, what="deliveries", timeout_s=600, poll_s=0.05)
        rate = n / (time.perf_counter() - started)
        spent = [
            (cpu_seconds(w.pid) or 0.0) - (before or 0.0) for w, before in zip(workers, cpu, strict=True)
        ]
        key = f"ours {engine.dialect.name} x{processes}"
        keep_lowest(CLIENT_CPU_US, key, sum(spent) / n * 1e6)
        if server is not None:
            keep_lowest(SERVER_CPU_US, key, server.spent() / n * 1e6)
            server.close()
        return rate
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(60)
        engine.dispose()


# --- latency at a steady event rate ----------------------------------------------------------------


def steady_enqueue(engine: Any, sink_url: str, action_id: int, *, rate: int, seconds: float,
                   after_commit: Callable[[], None] = lambda: None) -> int:  # fmt: skip
    from contactsync.delivery.outbox import enqueue

    total = int(rate * seconds)
    started = time.perf_counter()
    for i in range(total):
        pause = started + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        with engine.begin() as conn:
            enqueue(
                conn, requests_for(sink_url, action_id, range(1_000_000 + i, 1_000_001 + i)), now=utcnow()
            )
        after_commit()
    return total


def latencies_ms(engine: Any) -> list[float]:
    import sqlalchemy as sa

    from contactsync.db import platform as t

    d, a = t.deliveries.c, t.delivery_attempts.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(d.created_at, a.started_at)
            .join(t.delivery_attempts, a.delivery_id == d.id)
            .where(a.number == 1, d.transactionid >= 1_000_000)
        ).all()
    return sorted((started - created).total_seconds() * 1000 for created, started in rows)


def percentiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


def latency_pg(
    db_url: str, sink_url: str, *, rate: int, seconds: float, concurrency: int
) -> tuple[float, float]:
    engine, action_id = prepare_db(db_url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "contactsync", "worker"], env=worker_env(db_url, concurrency)
    )
    try:
        from contactsync.delivery.outbox import enqueue

        with engine.begin() as conn:
            enqueue(conn, requests_for(sink_url, action_id, range(1, 2)), now=utcnow())
        wait_until(lambda: delivered(engine) == 1, what="warm-up", timeout_s=60)
        total = steady_enqueue(engine, sink_url, action_id, rate=rate, seconds=seconds)
        wait_until(lambda: delivered(engine) == total + 1, what="deliveries", timeout_s=120)
        return percentiles(latencies_ms(engine))
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        engine.dispose()


def latency_sqlite_in_process(
    db_url: str, sink_url: str, *, rate: int, seconds: float, concurrency: int
) -> tuple[float, float]:
    from contactsync.delivery.dispatcher import Dispatcher, DispatcherConfig
    from contactsync.delivery.netguard import NetPolicy

    engine, action_id = prepare_db(db_url)
    config = DispatcherConfig(
        concurrency=concurrency, endpoint_concurrency=concurrency, poll_interval_s=0.5,
        policy=NetPolicy(allowed_cidrs=("127.0.0.1/32",)),
    )  # fmt: skip
    dispatcher = Dispatcher(engine, config=config)
    thread = threading.Thread(target=lambda: asyncio.run(dispatcher.run()), daemon=True)
    thread.start()
    try:
        total = steady_enqueue(
            engine, sink_url, action_id, rate=rate, seconds=seconds, after_commit=dispatcher.wake
        )
        wait_until(lambda: delivered(engine) == total, what="deliveries", timeout_s=120)
        return percentiles(latencies_ms(engine))
    finally:
        dispatcher.stop()
        thread.join(60)
        engine.dispose()


# --- chain latency: one contact's ordered deliveries ----------------------------------------------

POLL_INTERVAL_DEFAULT_S = 1.0
"""The chain runs at the settings' default poll interval: what an installation gets."""


def bare_round_trip_ms(url: str, *, n: int = 200) -> float:
    """Mean time of one signed POST and its answer, one at a time on a kept-alive connection."""
    import aiohttp

    async def main() -> float:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            for warm in (True, False):
                started = time.perf_counter()
                for tid in range(1, n + 1):
                    body = body_of(tid)
                    async with session.post(url, data=body, headers=signed_headers(tid, body)) as response:
                        await response.read()
                if not warm:
                    return (time.perf_counter() - started) / n * 1000
        raise AssertionError("unreachable")

    return asyncio.run(main())


def chain_requests(url: str, action_id: int, tids: range) -> list[Any]:
    from dataclasses import replace

    return [
        replace(r, ordering_key=f"{action_id}:1", contact_id=1) for r in requests_for(url, action_id, tids)
    ]


def run_chain(engine: Any, sink_url: str, action_id: int, n: int) -> float:
    """Commit a chain of ``n`` ordered deliveries at once; ms per link until the last is delivered."""
    from contactsync.delivery.outbox import enqueue

    base = delivered(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        enqueue(conn, chain_requests(sink_url, action_id, range(2_000_000, 2_000_000 + n)), now=utcnow())
    wait_until(lambda: delivered(engine) == base + n, what="chain", timeout_s=60 + 2 * n, poll_s=0.005)
    return (time.perf_counter() - started) / n * 1000


def chain_pg(db_url: str, sink_url: str, n: int) -> float:
    from contactsync.delivery.outbox import enqueue

    engine, action_id = prepare_db(db_url)
    env = worker_env(db_url, 10, poll_interval_s=POLL_INTERVAL_DEFAULT_S)
    worker = subprocess.Popen([sys.executable, "-m", "contactsync", "worker"], env=env)
    try:
        with engine.begin() as conn:
            enqueue(conn, requests_for(sink_url, action_id, range(1, 2)), now=utcnow())
        wait_until(lambda: delivered(engine) == 1, what="warm-up", timeout_s=60)
        return run_chain(engine, sink_url, action_id, n)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        engine.dispose()


def chain_sqlite_in_process(db_url: str, sink_url: str, n: int) -> float:
    from contactsync.delivery.dispatcher import Dispatcher, DispatcherConfig
    from contactsync.delivery.netguard import NetPolicy
    from contactsync.delivery.outbox import enqueue

    engine, action_id = prepare_db(db_url)
    config = DispatcherConfig(
        concurrency=10, endpoint_concurrency=10, poll_interval_s=POLL_INTERVAL_DEFAULT_S,
        policy=NetPolicy(allowed_cidrs=("127.0.0.1/32",)),
    )  # fmt: skip
    dispatcher = Dispatcher(engine, config=config)
    thread = threading.Thread(target=lambda: asyncio.run(dispatcher.run()), daemon=True)
    thread.start()
    try:
        with engine.begin() as conn:
            enqueue(conn, requests_for(sink_url, action_id, range(1, 2)), now=utcnow())
        dispatcher.wake()
        wait_until(lambda: delivered(engine) == 1, what="warm-up", timeout_s=60)
        base = delivered(engine)
        started = time.perf_counter()
        with engine.begin() as conn:
            enqueue(conn, chain_requests(sink_url, action_id, range(2_000_000, 2_000_000 + n)), now=utcnow())
        dispatcher.wake()  # as the event path does after its commit
        wait_until(lambda: delivered(engine) == base + n, what="chain", timeout_s=60 + 2 * n, poll_s=0.005)
        return (time.perf_counter() - started) / n * 1000
    finally:
        dispatcher.stop()
        thread.join(60)
        engine.dispose()


# --- main -----------------------------------------------------------------------------------------


def fresh_pg() -> tuple[str, Callable[[], None]]:
    import psycopg

    admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    name = "bench_" + uuid.uuid4().hex[:12]
    admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="deliveries per contestant")
    parser.add_argument("--concurrency", type=int, default=100, help="requests in flight (ours and bare)")
    parser.add_argument(
        "--celery-concurrency", type=int, default=8, help="prefork processes of the Celery worker"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds (best kept)")
    parser.add_argument("--rate", type=int, default=500, help="events/s of the latency run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--skip-celery", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--chain-n", type=int, default=20, help="ordered deliveries in the chain run")
    parser.add_argument(
        "--only",
        default="throughput,latency,chain",
        help="comma-separated parts to run: throughput, latency, chain",
    )
    parser.add_argument(
        "--sustained",
        action="store_true",
        help="then hold 70%% of each measured peak (ours) and report latency and backlog growth",
    )
    parser.add_argument("--sustained-seconds", type=float, default=60.0)
    parser.add_argument("--sustained-share", type=float, default=0.7, help="share of the peak to hold")
    args = parser.parse_args()
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = parts - {"throughput", "latency", "chain"}
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}")
    if args.sustained and "throughput" not in parts:
        parser.error("--sustained holds a share of the peak measured by the throughput part")

    sink_proc, sink_url = start_sink()
    results: dict[str, float] = {}
    sink_us: dict[str, float] = {}  # sink CPU per delivery: is the sink the bottleneck?

    def measured(key: str, run: Callable[[], float]) -> None:
        before = cpu_seconds(sink_proc.pid)
        rate = run()
        results[key] = max(rate, results.get(key, rate))
        after = cpu_seconds(sink_proc.pid)
        if before is not None and after is not None:
            keep_lowest(sink_us, key, (after - before) / args.n * 1e6)
        print(f"{key:24} {rate:9.0f} deliveries/s", flush=True)

    lat: dict[str, tuple[float, float]] = {}
    chains: dict[str, float] = {}
    round_trip_ms = 0.0
    held: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if "throughput" in parts:
                for number in range(1, args.rounds + 1):
                    print(f"-- round {number} of {args.rounds}", flush=True)
                    throughput(args, sink_url, f"{tmp}/round{number}", measured)
            if "latency" in parts:
                lat["sqlite in-process"] = latency_sqlite_in_process(
                    f"sqlite:///{tmp}/latency.db", sink_url, rate=args.rate, seconds=args.seconds,
                    concurrency=args.concurrency,
                )  # fmt: skip
                if not args.skip_postgres:
                    url, drop = fresh_pg()
                    try:
                        lat["postgresql worker"] = latency_pg(
                            url, sink_url, rate=args.rate, seconds=args.seconds, concurrency=args.concurrency
                        )
                    finally:
                        drop()
            if "chain" in parts:
                round_trip_ms = bare_round_trip_ms(sink_url)
                chains["sqlite in-process"] = chain_sqlite_in_process(
                    f"sqlite:///{tmp}/chain.db", sink_url, args.chain_n
                )
                if not args.skip_postgres:
                    url, drop = fresh_pg()
                    try:
                        chains["postgresql worker"] = chain_pg(url, sink_url, args.chain_n)
                    finally:
                        drop()
            if args.sustained:
                sink_proc.send_signal(signal.SIGTERM)  # the sustained runs have sinks that take notes
                sink_proc.wait(30)
                for key, rate in results.items():
                    if key.startswith("ours"):
                        held.append(sustained(args, key, rate, tmp))
    finally:
        if sink_proc.poll() is None:
            sink_proc.send_signal(signal.SIGTERM)
            sink_proc.wait(30)

    cpus = os.cpu_count()
    if results:
        report_throughput(args, results, sink_us, cpus)
    for key, (p50, p99) in lat.items():
        print(f"commit -> first attempt at {args.rate}/s, {key:18} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
    if chains:
        print(
            f"chain of {args.chain_n} ordered deliveries for one contact, poll interval"
            f" {POLL_INTERVAL_DEFAULT_S:g} s; bare round trip {round_trip_ms:.2f} ms"
        )
    for key, per_link in chains.items():
        print(
            f"chain latency {key:18} {per_link:8.2f} ms per delivery  = {per_link / round_trip_ms:7.1f}x bare"
        )
    for line in held:
        print(line)


def throughput(
    args: argparse.Namespace, sink_url: str, tmp: str, measured: Callable[[str, Callable[[], float]], None]
) -> None:
    """One round of every contestant (each result goes through ``measured``, which keeps the best)."""
    os.makedirs(tmp, exist_ok=True)
    measured("bare aiohttp loop", lambda: run_bare(sink_url, args.n, concurrency=args.concurrency))
    measured(
        "ours sqlite x1",
        lambda: run_ours(
            f"sqlite:///{tmp}/bench.db", sink_url, args.n, processes=1, concurrency=args.concurrency
        ),
    )
    if not args.skip_postgres:
        for processes in (1, 2):
            url, drop = fresh_pg()
            try:
                measured(
                    f"ours postgresql x{processes}",
                    functools.partial(
                        run_ours, url, sink_url, args.n, processes=processes, concurrency=args.concurrency
                    ),
                )
            finally:
                drop()
    if not args.skip_celery:
        measured("celery + redis", lambda: run_celery(sink_url, args.n, concurrency=args.celery_concurrency))


RATIO_GOALS = {"ours sqlite x1", "ours postgresql x2"}
"""Where the issue sets the deliveries/s goal against the bare loop (PostgreSQL x1 is shown too)."""


def report_throughput(
    args: argparse.Namespace, results: dict[str, float], sink_us: dict[str, float], cpus: int | None
) -> None:
    bare = results["bare aiohttp loop"]
    celery = results.get("celery + redis")
    print(
        f"\nN = {args.n}, concurrency {args.concurrency}, best of {args.rounds} interleaved round(s),"
        f" one uvicorn sink on 127.0.0.1, {cpus} CPUs"
    )
    print(f"{'bare aiohttp loop':24} {bare:9.0f}/s")
    for key, rate in results.items():
        if not key.startswith("ours"):
            continue
        ratio = rate / bare
        goal = (
            f"(goal >= {RATIO_GOAL}: {'met' if ratio >= RATIO_GOAL else 'NOT met'})"
            if key in RATIO_GOALS
            else ""
        )
        line = f"{key:24} {rate:9.0f}/s  vs bare {ratio:5.2f}x {goal:24}"
        if celery:
            versus = rate / celery
            met = "met" if versus >= CELERY_GOAL else "NOT met"
            line += f"  vs celery {versus:5.2f}x (goal >= {CELERY_GOAL}: {met})"
        print(line)
    if celery:
        print(f"{'celery + redis':24} {celery:9.0f}/s")
    if sink_us:
        busy = {key: results[key] * us / 1e6 for key, us in sink_us.items()}
        print(
            f"sink CPU per delivery {min(sink_us.values()):.0f}-{max(sink_us.values()):.0f} us;"
            f" sink busy at most {max(busy.values()):.0%} of one core ({max(busy, key=busy.__getitem__)})"
        )
    bare_us = CLIENT_CPU_US.get("bare aiohttp loop")
    for key, us in CLIENT_CPU_US.items():
        if key.startswith("ours"):
            met = "met" if us <= SENDER_GOAL_US else "NOT met"
            rel = f" = {us / bare_us:4.2f}x the bare loop's" if bare_us else ""
            print(f"sender CPU per delivery, {key:20} {us:5.0f} us{rel} (goal <= {SENDER_GOAL_US} us: {met})")
    if bare_us:
        print(f"sender CPU per delivery, {'bare aiohttp loop':20} {bare_us:5.0f} us")
    for key, us in SERVER_CPU_US.items():
        print(f"PostgreSQL server CPU per delivery, {key:20} {us:5.0f} us (its backends, /proc)")


# --- sustained: a share of the peak for a minute ---------------------------------------------------


SUSTAINED_SQLITE_POLL_S = 0.1


def sustained(args: argparse.Namespace, key: str, peak: float, tmp: str) -> str:
    """Hold ``share`` of ``key``'s peak for ``seconds``: p50/p99 of enqueue -> received, and whether
    the outbox backlog (pending + in flight) grew. Events are committed every 20 ms (what arrived
    meanwhile, in one transaction) to worker processes as in the peak's run: woken by NOTIFY on
    PostgreSQL, polling every ``SUSTAINED_SQLITE_POLL_S`` on SQLite (nothing wakes another process)."""
    rate = peak * args.sustained_share
    dialect, processes = key.split()[1], int(key.rsplit("x", 1)[1])
    log_path = f"{tmp}/received-{dialect}-{processes}.log"
    sink_proc, sink_url = start_sink(record_to=log_path)
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if dialect == "sqlite":
        db_url = f"sqlite:///{tmp}/sustained.db"
    else:
        db_url, drop = fresh_pg()
    engine, action_id = prepare_db(db_url)
    # the peak's set-up: worker processes; on SQLite nothing wakes them, so they poll every 0.1 s
    poll_s = SUSTAINED_SQLITE_POLL_S if dialect == "sqlite" else 0.5
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "contactsync", "worker"],
            env=worker_env(db_url, args.concurrency, poll_interval_s=poll_s),
        )
        for _ in range(processes)
    ]

    def stop_dispatch() -> None:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(60)

    from contactsync.delivery.outbox import enqueue

    try:
        with engine.begin() as conn:
            enqueue(conn, requests_for(sink_url, action_id, range(1, 2)), now=utcnow())
        wait_until(lambda: delivered(engine) == 1, what="warm-up", timeout_s=60)
        enqueued: dict[int, float] = {}
        backlog: list[int] = []
        started = time.perf_counter()
        next_sample = started
        every_s = max(1.0, args.sustained_seconds / 12)
        sent = 0
        while (now := time.perf_counter()) - started < args.sustained_seconds:
            due = int((now - started) * rate)
            if due > sent:
                tids = range(2 + sent, 2 + due)
                with engine.begin() as conn:
                    enqueue(conn, requests_for(sink_url, action_id, tids), now=utcnow())
                stamp = time.time()
                enqueued.update(dict.fromkeys(tids, stamp))
                sent = due
            if now >= next_sample:
                backlog.append(waiting(engine))
                next_sample += every_s
            time.sleep(0.02)
        wait_until(lambda: delivered(engine) == sent + 1, what="sustained deliveries", timeout_s=300)
    finally:
        stop_dispatch()
        engine.dispose()
        sink_proc.send_signal(signal.SIGTERM)
        sink_proc.wait(30)
        drop()
    received: dict[int, float] = {}
    for line in Path(log_path).read_text().splitlines():
        tid, _, at = line.partition(" ")
        if tid.isdigit():
            received.setdefault(int(tid), float(at))  # the first arrival (a retry is a duplicate)
    latencies = sorted((received[t] - at) * 1000 for t, at in enqueued.items() if t in received)
    p50, p99 = percentiles(latencies) if len(latencies) > 1 else (float("nan"), float("nan"))
    third = max(len(backlog) // 3, 1)
    early, late = statistics.mean(backlog[:third]), statistics.mean(backlog[-third:])
    grew = late > 2 * early + rate * 0.5  # more than half a second of work added and still growing
    return (
        f"sustained {key:20} {rate:6.0f}/s ({args.sustained_share:.0%} of peak {peak:.0f}/s) for"
        f" {args.sustained_seconds:.0f} s: enqueue -> received p50 {p50:7.1f} ms, p99 {p99:7.1f} ms;"
        f" outbox backlog every {every_s:.0f} s {backlog}: {'GREW' if grew else 'did not grow'}"
    )


def waiting(engine: Any) -> int:
    import sqlalchemy as sa

    from contactsync.db import platform as t

    d = t.deliveries.c
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(d.state.in_(["pending", "in_flight"]))
        return int(conn.execute(query).scalar_one())


if __name__ == "__main__":
    main()
