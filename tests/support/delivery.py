"""Helpers for the delivery tests: a migrated platform database with one action, and outbox rows."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from aiohttp import web

from contactsync.db import platform as t
from contactsync.delivery.outbox import OutboxRequest, enqueue
from support.ports import free_port

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DEFAULT_ACCOUNT = 1
DEFAULT_ACTION = 1
"""What :func:`migrated` seeds and :func:`request` uses unless told otherwise."""
OLD_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="


def seed_action(
    conn: sa.Connection,
    *,
    now: datetime,
    endpoint: str = "http://127.0.0.1:1",
    settings: Mapping[str, Any] | None = None,
    secret: str = SECRET,
    previous_secret: str | None = None,
    previous_secret_expires_at: datetime | None = None,
) -> int:
    """A list, automation and sync action of the first account (created if need be); the action id."""
    account_id = conn.execute(sa.select(sa.func.min(t.accounts.c.id))).scalar()
    if account_id is None:
        account_id = conn.execute(
            t.accounts.insert().values(name="acme", created_at=now).returning(t.accounts.c.id)
        ).scalar_one()
    list_id = conn.execute(
        t.lists.insert().values(account_id=account_id, name="l", created_at=now).returning(t.lists.c.id)
    ).scalar_one()
    automation_id = conn.execute(
        t.automations.insert()
        .values(
            list_id=list_id,
            name="a",
            trigger="contact.created",
            conditions={},
            created_at=now,
            updated_at=now,
        )
        .returning(t.automations.c.id)
    ).scalar_one()
    return int(
        conn.execute(
            t.actions.insert()
            .values(
                automation_id=automation_id,
                settings=dict(settings or {}),
                secret=secret,
                previous_secret=previous_secret,
                previous_secret_expires_at=previous_secret_expires_at,
                endpoint=endpoint,
                created_at=now,
                updated_at=now,
            )
            .returning(t.actions.c.id)
        ).scalar_one()
    )


def request(
    tid: int,
    url: str,
    *,
    action_id: int | None = DEFAULT_ACTION,
    account_id: int = DEFAULT_ACCOUNT,
    body: bytes | None = None,
    method: str = "POST",
    ordering_key: str | None = None,
    contact_id: int | None = None,
) -> OutboxRequest:
    """A form-encoded outbox request numbered ``tid`` (of the action :func:`migrated` seeds, by default)."""
    from contactsync.delivery.endpoints import endpoint_key

    return OutboxRequest(
        transactionid=tid,
        account_id=account_id,
        endpoint=endpoint_key(url),
        method=method,
        url=url,
        body=body if body is not None else (b"" if method == "GET" else f"transactionid={tid}&n=1".encode()),
        content_type="" if method == "GET" else "application/x-www-form-urlencoded",
        headers={"X-Api-Key": "k"},
        action_id=action_id,
        contact_id=contact_id,
        ordering_key=ordering_key,
    )


def migrated(url: str, *, now: datetime) -> sa.Engine:
    """A platform database at ``url``, migrated, with account 1 and its signing action 1."""
    from contactsync.db import create_engine
    from contactsync.db.migrate import upgrade

    upgrade(url, side="platform")
    engine = create_engine(url)
    with engine.begin() as conn:
        assert seed_action(conn, now=now) == DEFAULT_ACTION
    return engine


def enqueue_many(engine: sa.Engine, requests: list[OutboxRequest], *, now: datetime) -> None:
    with engine.begin() as conn:
        enqueue(conn, requests, now=now)


# --- a scripted receiver on 127.0.0.1 -------------------------------------------------------------


@dataclass
class Arrival:
    """One request as the receiver saw it."""

    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)


class Receiver:
    """aiohttp apps on their own ports, each misbehaving in one way; records what arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[Arrival]] = {}
        self.release = asyncio.Event()
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.ports: dict[str, int] = {}
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.Server] = []

    def url(self, name: str, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    async def add(self, name: str, handler: Callable[[web.Request], Any]) -> None:
        """An HTTP app answering every path with ``handler`` on a port of its own."""

        async def recording(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.arrivals.setdefault(name, []).append(
                Arrival(request.method, request.path_qs, dict(request.headers), body)
            )
            self.in_flight[name] = self.in_flight.get(name, 0) + 1
            self.max_in_flight[name] = max(self.max_in_flight.get(name, 0), self.in_flight[name])
            try:
                return await handler(request)  # type: ignore[no-any-return]
            finally:
                self.in_flight[name] -= 1

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", recording)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.ports[name] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._runners.append(runner)

    async def add_raw(
        self, name: str, answer: bytes | None, *, stall_s: float = 0.0, rst: bool = False
    ) -> None:
        """A TCP server that reads the request head, writes ``answer`` (raw bytes), then stalls or resets."""

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                self.arrivals.setdefault(name, []).append(Arrival("?", "", {}, head))
                if answer:
                    writer.write(answer)
                    await writer.drain()
                if stall_s:
                    await asyncio.sleep(stall_s)
                if rst:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.ports[name] = server.sockets[0].getsockname()[1]
        self._servers.append(server)

    def add_refusing(self, name: str) -> None:
        """A port on which nothing listens (connection refused)."""
        self.ports[name] = free_port()

    async def close(self) -> None:
        self.release.set()
        for server in self._servers:
            server.close()
        for runner in self._runners:
            await runner.cleanup()


async def wait_for(
    predicate: Callable[[], bool], *, timeout_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` (in a thread: it may query the database) until true; fail after a deadline."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class FakeClock:
    """A settable naive-UTC clock for the dispatcher (thread-safe reads)."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        with self._lock:
            self.now += timedelta(seconds=seconds)


class ThreadedReceiver:
    """An aiohttp receiver on 127.0.0.1 in a background thread; subclasses answer in :meth:`handle`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("receiver did not start")
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def handle(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()


class CountingReceiver(ThreadedReceiver):
    """A receiver that fails a share of requests and records every attempt.

    For each ``webhook-id`` it keeps the (start, end) monotonic interval of every request and whether
    it was answered 2xx, so tests can count duplicates and check that attempts never overlapped.
    """

    def __init__(self, *, fail_ratio: float = 0.0, seed: int = 1, delay_s: float = 0.0) -> None:
        import random

        super().__init__()
        self.fail_ratio = fail_ratio
        self.delay_s = delay_s
        self._rng = random.Random(seed)
        self.intervals: dict[str, list[tuple[float, float, bool]]] = {}

    def delivered(self) -> set[str]:
        with self.lock:
            return {tid for tid, seen in self.intervals.items() if any(ok for _, _, ok in seen)}

    def successes(self) -> int:
        with self.lock:
            return sum(ok for seen in self.intervals.values() for _, _, ok in seen)

    async def handle(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        await request.read()
        tid = request.headers.get("webhook-id", "?")
        with self.lock:
            ok = self._rng.random() >= self.fail_ratio
            delay = self._rng.random() * self.delay_s
        if delay:
            await asyncio.sleep(delay)
        with self.lock:
            self.intervals.setdefault(tid, []).append((started, time.monotonic(), ok))
        return web.Response(status=200 if ok else 500, text="ok" if ok else "no")


def worker_env(db_url: str, **settings: object) -> dict[str, str]:
    """Environment for a ``contactsync worker`` subprocess (loopback receivers allowed)."""
    import json
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    env["CONTACTSYNC_DATABASE_URL"] = db_url
    env["CONTACTSYNC_ALLOWED_CIDRS"] = json.dumps(["127.0.0.1/32"])
    env["CONTACTSYNC_SECRETS_KEY"] = os.environ["CONTACTSYNC_SECRETS_KEY"]  # the tests' (conftest.py)
    for key, value in settings.items():
        env[f"CONTACTSYNC_{key.upper()}"] = str(value)
    return env


@contextmanager
def workers(db_url: str, logs: Sequence[Path], **settings: object) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``contactsync worker`` processes against ``db_url``, one per log file, stopped with SIGTERM on
    leaving (one killed meanwhile stays dead)."""
    env = worker_env(db_url, **settings)
    procs: list[subprocess.Popen[bytes]] = []
    for log in logs:
        with log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "contactsync", "worker"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
