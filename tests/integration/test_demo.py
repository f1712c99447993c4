"""``contactsync demo`` end to end: a real subprocess, real servers, a clean exit and an honest report."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from contactsync.db.engine import create_engine
from contactsync.tenancy import people

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
