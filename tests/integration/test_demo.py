"""``contactsync demo`` end to end: a real subprocess, real servers, a clean exit and an honest report."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from contactsync.db.engine import create_engine
from contactsync.db.platform import actions, lists
from contactsync.tenancy import people
from contactsync.tenancy.keys import create_key

pytestmark = pytest.mark.slow

SCRIPT = Path(sys.executable).with_name("contactsync")


def test_demo_runs_for_its_duration_and_reports_every_delivery_delivered_and_projected(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    done = subprocess.run(
        [str(SCRIPT), "demo", "--duration", "20", "--no-browser", "--dir", str(tmp_path / "demo"),
         "--port", "0", "--listener-port", "0"],
        capture_output=True, text=True, timeout=240, env={**env, "COLUMNS": "120"}, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output
    found = re.search(
        r"OK (\d+) events → (\d+) deliveries generated, (\d+) delivered, 0 failed, (\d+) projected", output
    )
    assert found, output
    events, generated, delivered, projected = (int(g) for g in found.groups())
    assert events > 0
    assert generated > 0
    assert generated == delivered == projected
    # the platform UI signs the operator in with the printed email and password; the listener's, the password
    assert re.search(r"Operator email\s+admin@localhost", output), output
    password = re.search(r"Operator password\s+(\S+)", output)
    assert password, output
    assert "(same password, no email)" in output
    engine = create_engine(f"sqlite:///{tmp_path / 'demo' / 'platform.db'}")
    with engine.connect() as conn:
        operator = people.authenticate(conn, "admin@localhost", password.group(1))
    engine.dispose()
    assert operator is not None
    assert operator.operator
    assert re.search(r"http://127\.0\.0\.1:\d+/login", output)
    assert (tmp_path / "demo" / "platform.db").exists()
    assert "every contact's projection equals the platform's data" in output

    # the check compares contents: a projection row altered behind the listener's back fails it
    check = [str(SCRIPT), "demo", "--check", "--dir", str(tmp_path / "demo")]
    again = subprocess.run(check, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    with sqlite3.connect(tmp_path / "demo" / "listener.db") as db:
        db.execute("UPDATE sync_field_values SET value = 'Nowhere' WHERE contact_id = '5' AND name = 'City'")
    altered = subprocess.run(check, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert altered.returncode == 1, altered.stdout + altered.stderr
    assert "contact 5: field 3 (name, value) is ('City', 'Nowhere')" in " ".join(altered.stdout.split())


def test_demo_refuses_a_directory_that_already_holds_a_demo(tmp_path: Path) -> None:
    (tmp_path / "platform.db").write_bytes(b"")
    done = subprocess.run(
        [str(SCRIPT), "demo", "--duration", "1", "--no-browser", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error:")
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_action_created_while_the_demo_runs_is_paired_with_its_listener(tmp_path: Path) -> None:
    """The demo's listener accepts its account's actions created during the demo: the action's test
    send and its first delivery are answered 2xx, with no secret copied by hand."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [str(SCRIPT), "demo", "--duration", "45", "--no-browser", "--dir", str(workdir), "--port", "0",
         "--listener-port", "0", "--contacts", "50", "--rate", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**env, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        base = None
        while base is None:
            assert time.monotonic() < deadline, "".join(lines)
            assert proc.poll() is None, "".join(lines)
            found = re.search(r"Platform admin UI\s+(http://127\.0\.0\.1:\d+)/login", "".join(lines))
            base = found.group(1) if found else None
            time.sleep(0.1)
        engine = create_engine(f"sqlite:///{workdir / 'platform.db'}")
        with engine.begin() as conn:
            account_id, list_id = conn.execute(
                sa.select(lists.c.account_id, lists.c.id).order_by(lists.c.id).limit(1)
            ).one()
            first_settings = conn.execute(
                sa.select(actions.c.settings).order_by(actions.c.id).limit(1)
            ).scalar_one()
            listener_url = first_settings["url"]
            key = create_key(conn, account_id=account_id, name="pairing test", role="owner", now=_now()).key
        engine.dispose()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
            automation = api.post(
                "/api/automations",
                json={
                    "list_id": list_id,
                    "name": "Made during the demo",
                    "trigger": {"event": "contact.created"},
                },
            )
            assert automation.status_code == 201, automation.text
            action = api.post(
                f"/api/automations/{automation.json()['id']}/actions", json={"url": listener_url}
            )
            assert action.status_code == 201, action.text
            made = api.post(f"/api/lists/{list_id}/contacts", json={"email": "paired@example.com"})
            assert made.status_code == 201, made.text
            sent = api.post(
                f"/api/actions/{action.json()['id']}/test-send",
                json={"contact_id": made.json()["contact"]["id"]},
            )
            assert sent.status_code == 200, sent.text
            assert sent.json()["response"]["status"] == 200, sent.text
            assert "paired" in sent.json()["response"]["hint"]
            deadline = time.monotonic() + 60
            while True:
                found = api.get("/api/deliveries", params={"action_id": action.json()["id"]}).json()["items"]
                if found and found[0]["state"] == "delivered":
                    break
                assert time.monotonic() < deadline, found
                time.sleep(0.2)
            detail = api.get(f"/api/deliveries/{found[0]['id']}").json()
            assert [a["status_code"] for a in detail["attempts"]] == [200]
        assert proc.wait(timeout=180) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        proc.stdout.close()
    assert "OK " in "".join(lines)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
