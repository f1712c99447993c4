"""``contactsync demo`` end to end: a real subprocess, real servers, a clean exit and an honest report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "Admin password" in output
    assert re.search(r"http://127\.0\.0\.1:\d+/login", output)
    assert (tmp_path / "demo" / "platform.db").exists()


def test_demo_refuses_a_directory_that_already_holds_a_demo(tmp_path: Path) -> None:
    (tmp_path / "platform.db").write_bytes(b"")
    done = subprocess.run(
        [str(SCRIPT), "demo", "--duration", "1", "--no-browser", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error:")
    assert len(done.stderr.strip().splitlines()) == 1
