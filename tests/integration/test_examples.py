"""The Flask, Django and FastAPI example apps run as they are and answer like the ready-made listener."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.listener import SECRET, TOKEN, payload, signed
from support.ports import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(params=["flask_app", "django_app", "fastapi_app"])
def example(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path / "synced.jsonl"
    env = {
        **os.environ,
        "CONTACTSYNC_LISTENER_TOKEN": TOKEN,
        "CONTACTSYNC_LISTENER_SECRET": SECRET,
        "SYNC_LOG": str(log),
        "PORT": str(port),
        "PYTHONWARNINGS": "ignore",
    }
    output = tmp_path / "server.log"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / f"{request.param}.py")],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, output.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, output.read_text()
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/sync/{TOKEN}", log
    finally:
        process.terminate()
        process.wait(30)


def test_example_accepts_signed_syncs_and_refuses_the_rest(example: tuple[str, Path]) -> None:
    url, log = example
    form = payload(11, contact_id=1).to_form()
    as_json = payload(12, contact_id=2).to_json()
    query = payload(13, contact_id=3).to_form()
    target = f"/sync/{TOKEN}?{query}"
    with httpx.Client(timeout=30) as client:
        ok = client.post(url, content=form, headers={"content-type": FORM, **signed(form, msg_id="11")})
        assert (ok.status_code, ok.json()) == (200, {"ok": True, "transactionid": "11"})
        headers = {"content-type": "application/json", **signed(as_json, msg_id="12")}
        assert client.post(url, content=as_json, headers=headers).status_code == 200
        assert client.get(f"{url}?{query}", headers=signed(target, msg_id="13")).status_code == 200

        forged = client.post(url, content=form, headers={"content-type": FORM, **signed("x", msg_id="11")})
        assert (forged.status_code, forged.json()["error"]) == (401, "signature")
        bad = form + "&fields%5B0%5D%5Bid%5D=abc"
        invalid = client.post(url, content=bad, headers={"content-type": FORM, **signed(bad, msg_id="1")})
        assert (invalid.status_code, invalid.json()["path"]) == (422, "fields[0].id")
        assert client.post(url[:-3], content=form).status_code == 404
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["contact"]["id"] for line in lines] == [1, 2, 3]
    assert lines[0]["fields"][1] == {"id": 4, "name": "City", "value": "Zürich & Co"}
