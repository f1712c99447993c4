"""docs/api.md cannot rot: every shell block in it runs, in order, against a live platform (API with
its dispatcher) and a live receiver, and each JSON block after a command must be contained in what
the command printed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.api import Receiver, api_client
from support.listener import serve

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
FENCE = re.compile(r"```(sh|json)\n(.*?)```", re.DOTALL)
DOC_PLATFORM, DOC_RECEIVER = "http://127.0.0.1:8000", "http://127.0.0.1:9000"


def _steps(text: str) -> list[tuple[str, Any]]:
    """``(shell block, expected JSON or None)`` in document order."""
    steps: list[tuple[str, Any]] = []
    for kind, body in FENCE.findall(text):
        if kind == "sh":
            steps.append((body, None))
        else:
            assert steps, "a JSON block must follow a shell block"
            assert steps[-1][1] is None, "one JSON block per command"
            steps[-1] = (steps[-1][0], json.loads(body))
    return steps


def _contains(actual: Any, expected: Any) -> bool:
    """Dicts: every expected key with a contained value; everything else: equal."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _contains(actual[k], v) for k, v in expected.items()
        )
    return bool(actual == expected)


def _printed(output: str) -> Any:
    try:
        return json.loads(output)
    except json.JSONDecodeError:
        return json.loads(output.strip().splitlines()[-1])


def test_every_command_of_the_api_walkthrough_works(tmp_path: Path) -> None:
    steps = _steps(DOC.read_text())
    assert len(steps) >= 12, "the walkthrough lost its commands"
    receiver = Receiver()
    db = f"sqlite:///{tmp_path / 'platform.db'}"
    with (
        serve(receiver.app) as receiver_base,
        api_client(db, run_dispatcher=True, allowed_cidrs=["127.0.0.0/8"], poll_interval_s=0.1) as api,
    ):
        script = ["set -euo pipefail"]
        for i, (block, _expected) in enumerate(steps):
            body = block.replace(DOC_PLATFORM, api.base_url).replace(DOC_RECEIVER, receiver_base)
            script += [f"printf '\\n@@step {i}@@\\n'", body]
        env = {
            **os.environ,
            "CONTACTSYNC_DATABASE_URL": db,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}"
    outputs = re.split(r"\n@@step \d+@@\n", done.stdout)[1:]
    assert len(outputs) == len(steps)
    for (block, expected), output in zip(steps, outputs, strict=True):
        if expected is None:
            continue
        wanted = json.loads(json.dumps(expected).replace(DOC_RECEIVER, receiver_base))
        got = _printed(output)
        assert _contains(got, wanted), f"{block}\nprinted {got}\nexpected {wanted}"
    assert len(receiver.got) >= 3  # the test send and both deliveries reached the receiver
