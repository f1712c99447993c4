"""No acknowledged loss: kill -9 the listener under load; after restart each 2xx is stored, projected once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import httpx
import pytest
import sqlalchemy as sa

from contactsync.db import listener as t
from contactsync.db.engine import create_engine
from support.listener import SECRET, TOKEN, payload, signed
from support.ports import free_port

pytestmark = pytest.mark.slow

CONCURRENCY = 32
ACKS_BEFORE_KILL = 300


@contextmanager
def _listener_process(db_url: str, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "CONTACTSYNC_LISTENER_DATABASE_URL": db_url,
        "CONTACTSYNC_LISTENER_TOKEN": TOKEN,
        "CONTACTSYNC_LISTENER_SECRET": SECRET,
        "CONTACTSYNC_LISTENER_HANDLER_LEASE_S": "1",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "contactsync.servers:listener_server_from_env"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/sync/{TOKEN}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "listener did not start"
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


async def _load(url: str, process: subprocess.Popen[bytes]) -> list[int]:
    """Send unique payloads until the listener dies; kill it -9 once enough were acknowledged."""
    acked: list[int] = []
    counter = iter(range(10**6, 2 * 10**6))

    async def sender(session: aiohttp.ClientSession) -> None:
        for tid in counter:
            body = payload(tid, contact_id=tid).to_form()
            headers = {"content-type": "application/x-www-form-urlencoded", **signed(body, msg_id=str(tid))}
            try:
                async with session.post(url, data=body, headers=headers) as answer:
                    if answer.status == 200:
                        acked.append(tid)
                    else:
                        raise AssertionError(f"{answer.status}: {await answer.text()}")
            except aiohttp.ClientError:
                return
            if len(acked) >= ACKS_BEFORE_KILL and process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(sender(session) for _ in range(CONCURRENCY)))
    return acked


def test_kill_9_under_load_loses_no_acknowledged_request(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "listener.log"
    url = f"http://127.0.0.1:{port}/sync/{TOKEN}"
    with _listener_process(db_url, port, log) as process:
        acked = asyncio.run(_load(url, process))
        assert process.wait(30) == -signal.SIGKILL
    assert len(acked) >= ACKS_BEFORE_KILL
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = set(conn.execute(sa.select(t.inbox.c.transactionid)).scalars())
        assert {str(tid) for tid in acked} <= stored
        with _listener_process(db_url, port, log):
            deadline = time.monotonic() + 120
            while True:
                with engine.connect() as conn:
                    pending = conn.execute(
                        sa.select(sa.func.count()).where(t.handler_runs.c.state != "done")
                    ).scalar_one()
                if pending == 0:
                    break
                assert time.monotonic() < deadline, f"{pending} handler runs still pending"
                time.sleep(0.1)
        with engine.connect() as conn:
            contacts = {
                row.contact_id: row
                for row in conn.execute(
                    sa.select(
                        t.contacts.c.contact_id,
                        t.contacts.c.email_transactionid,
                        t.contacts.c.last_transactionid,
                    )
                )
            }
            links = conn.execute(sa.select(sa.func.count()).select_from(t.links_clicked)).scalar_one()
            runs = conn.execute(sa.select(sa.func.count()).select_from(t.handler_runs)).scalar_one()
        assert set(contacts) == stored  # each payload has its own contact, projected
        assert all(
            str(row.email_transactionid) == str(row.last_transactionid) == row.contact_id
            for row in contacts.values()
        )
        assert links == len(stored)
        assert runs == len(stored)
    finally:
        engine.dispose()
