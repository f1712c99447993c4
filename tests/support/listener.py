"""Listener test helpers: a real uvicorn server on 127.0.0.1 in a thread, sample payloads, signed requests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import uvicorn

from contactsync.wire import signing
from contactsync.wire.payload import SyncPayload

TOKEN = "t0k3n-" + "a" * 40
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, base64


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


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
