"""``contactsync keys`` and ``contactsync serve --with-worker`` as an operator runs them.

The server is a real subprocess (migrations on start, one dispatcher in-process on SQLite) that
delivers to a local receiver; stopped with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from contactsync.cli import app
from support.api import Receiver
from support.listener import serve
from support.ports import free_port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "CONTACTSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'platform.db'}",
        "CONTACTSYNC_ALLOW_PRIVATE_NETWORKS": "true",
        "CONTACTSYNC_POLL_INTERVAL_S": "0.2",
    }


def _cli(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "contactsync",
            "serve",
            "--port",
            str(port),
            "--with-worker",
            "--log-level",
            "warning",
        ],
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{base}/api/openapi.json", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, stderr = proc.communicate(timeout=30)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.returncode in (0, -signal.SIGTERM)
        assert b"Traceback" not in stderr, stderr.decode()


def test_keys_and_serve_with_worker(env: dict[str, str], server: str) -> None:
    key = _cli(env, "keys", "create", "--name", "ops", "--role", "owner").strip()
    assert key.startswith("csk_")
    listed = _cli(env, "keys", "list")
    assert "ops" in listed
    assert key not in listed
    rec = Receiver()
    with (
        serve(rec.app) as receiver,
        httpx.Client(base_url=server, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client,
    ):
        lst = client.post("/api/lists", json={"name": "L"}).json()
        automation = client.post(
            "/api/automations",
            json={"list_id": lst["id"], "name": "welcome", "trigger": {"event": "contact.created"}},
        ).json()
        action = client.post(f"/api/automations/{automation['id']}/actions", json={"url": f"{receiver}/hook"})
        assert action.status_code == 201, action.text
        made = client.post(f"/api/lists/{lst['id']}/contacts", json={"email": "new@example.com"}).json()
        assert len(made["transactionids"]) == 1
        assert rec.arrived.wait(60), "the in-process dispatcher did not deliver"
        assert rec.got[0][0]["webhook-id"] == made["transactionids"][0]
        key_id = client.get("/api/keys").json()[0]["id"]
        assert "revoked" in _cli(env, "keys", "revoke", str(key_id))
        assert client.get("/api/lists").status_code == 401
    result = CliRunner().invoke(app, ["keys", "revoke", "999"], env=env)
    assert result.exit_code != 0
