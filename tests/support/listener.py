"""Listener test helpers: a real uvicorn server on 127.0.0.1 in a thread, sample payloads, signed requests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn

from contactsync.db import listener as t
from contactsync.db.engine import create_engine
from contactsync.servers import listener_server
from contactsync.settings import Settings
from contactsync.wire import signing
from contactsync.wire.payload import SyncPayload
from support.ports import free_socket

FORM = "application/x-www-form-urlencoded"
JSON = "application/json; charset=utf-8"
TOKEN = "t0k3n-" + "a" * 40
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, base64


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free 127.0.0.1 port; yields the base URL."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="none", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("listener did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def payload(
    transactionid: int,
    *,
    contact_id: int = 42,
    email: str = "jane@example.com",
    clicks: int = 3,
    extra: Mapping[str, Any] | None = None,
) -> SyncPayload:
    """A payload with every section filled."""
    data: dict[str, Any] = {
        "transactionid": str(transactionid),
        "contact": {
            "id": contact_id,
            "email": email,
            "phone": "+15551234567",
            "profile_url": f"https://platform.example/contacts/{contact_id}",
        },
        "fields": [
            {"id": 3, "name": "First Name", "value": "Jane"},
            {"id": 4, "name": "City", "value": "Zürich & Co"},
        ],
        "campaigns-opened": [{"id": 7, "name": "Spring", "open_date": "2026-03-01 10:00:00"}],
        "links-clicked": [{"url": "https://example.com/a?b=c&d[]=1", "clicks": clicks}],
        "pages-visited": [{"page": "https://example.com/pricing", "visit_date": "2026-03-02 11:00:00"}],
        "automation-triggered": [{"id": 9, "name": "Welcome", "trigger_date": "2026-03-03 12:00:00"}],
        "goals-reached": [{"id": 11, "name": "Bought", "reach_date": "2026-03-04 13:00:00"}],
        "webhooks-triggered": [{"id": 13, "name": "Zap", "trigger_date": "2026-03-05 14:00:00"}],
        "lead-score": [{"id": 15, "name": "Opened", "score": 10, "score_date": "2026-03-06 15:00:00"}],
        "lead-status": {"score": 40, "label": "Warm"},
    }
    data.update(extra or {})
    return SyncPayload.from_wire(data)


def signed(
    body: bytes | str, *, msg_id: str, secret: str = SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """The three ``webhook-*`` headers for ``body`` (or a GET request target)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return signing.headers(secret, msg_id=msg_id, timestamp=stamp, content=body)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


class Listener:
    """A listener app served on 127.0.0.1, with a client and a look into its database."""

    def __init__(self, base: str, url: str) -> None:
        self.base = base
        self.sync = f"{base}/sync/{TOKEN}"
        self.engine = create_engine(url)
        self.http = httpx.Client(timeout=30)

    def post(self, body: bytes | str, content_type: str = FORM, **headers: str) -> httpx.Response:
        return self.http.post(self.sync, content=body, headers={"content-type": content_type, **headers})

    def post_signed(self, body: bytes | str, content_type: str = FORM, msg_id: str = "1") -> httpx.Response:
        return self.post(body, content_type, **signed(body, msg_id=msg_id))

    def get_signed(self, query: str, msg_id: str = "1") -> httpx.Response:
        target = f"/sync/{TOKEN}?{query}"
        return self.http.get(self.base + target, headers=signed(target, msg_id=msg_id))

    def count(self, table: sa.Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    def rows(self, table: sa.Table, *skip: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            found = [dict(r._mapping) for r in conn.execute(sa.select(table))]
        for row in found:
            for column in ("id", "updated_at_ms", *skip):
                row.pop(column, None)
        return sorted(found, key=repr)

    def projected(self) -> dict[str, list[dict[str, Any]]]:
        return {table.name: self.rows(table) for table in t.PROJECTION_TABLES}

    def done(self, n: int) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(sa.select(sa.func.count()).where(t.handler_runs.c.state == "done")).scalar_one()
                >= n
            )


def start_listener(url: str, **overrides: Any) -> Generator[Listener, None, None]:
    """Serve a listener on ``url`` (signed with ``SECRET``) for the length of a fixture."""
    options: dict[str, Any] = {
        "listener_database_url": url,
        "listener_token": TOKEN,
        "listener_secret": SECRET,
    }
    options.update(overrides)
    app = listener_server(Settings(**options), poll_interval_s=0.05)
    with serve(app) as base:
        listener = Listener(base, url)
        try:
            yield listener
        finally:
            listener.http.close()
            listener.engine.dispose()
