"""A platform installation as an operator runs it: ``contactsync serve`` and ``contactsync worker``
subprocesses on one database, reached over HTTP on 127.0.0.1 (for the concurrency suite)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from contactsync.db import create_engine
from contactsync.db.migrate import upgrade
from support.api import new_account
from support.delivery import worker_env
from support.ports import free_port


@dataclass
class Installation:
    """API base URLs (one per ``serve`` process), a key of one account, and the shared database."""

    apis: list[str]
    key: str
    account_id: int
    engine: sa.Engine
    logs: list[Path] = field(default_factory=list)

    def client(self, index: int = 0) -> httpx.Client:
        """A client of API process ``index`` (modulo their number), authenticated with the key."""
        return httpx.Client(
            base_url=self.apis[index % len(self.apis)],
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=60,
        )

    def scalar(self, query: sa.Select[int]) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def log_tails(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs)


def _wait_until_serving(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/api/openapi.json", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "contactsync", *args], env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


@contextmanager
def installation(
    db_url: str, tmp_path: Path, *, api_processes: int, worker_processes: int, **settings: object
) -> Iterator[Installation]:
    """``api_processes`` × ``contactsync serve`` and ``worker_processes`` × ``contactsync worker`` on
    ``db_url``; with no worker process the first API process dispatches in-process (``--with-worker``,
    the embedded SQLite set-up)."""
    upgrade(db_url)
    engine = create_engine(db_url)
    account_id, key = new_account(engine)
    env = worker_env(db_url, **settings)
    apis: list[str] = []
    logs: list[Path] = []
    with ExitStack() as stack:
        stack.callback(engine.dispose)
        for i in range(worker_processes):
            logs.append(tmp_path / f"worker{i}.log")
            stack.enter_context(_process(["worker"], env, logs[-1]))
        for i in range(api_processes):
            port = free_port()
            args = ["serve", "--port", str(port), "--log-level", "warning"]
            if worker_processes == 0 and i == 0:
                args.append("--with-worker")
            logs.append(tmp_path / f"api{i}.log")
            proc = stack.enter_context(_process(args, env, logs[-1]))
            base = f"http://127.0.0.1:{port}"
            _wait_until_serving(proc, base, logs[-1])
            apis.append(base)
        yield Installation(apis, key, account_id, engine, logs)


def manual_automation(engine: sa.Engine, rt: Any) -> dict[str, int]:
    """An account with a list (a City field), a manual automation and its sync action, through the
    services: what the CLI tests run their commands against."""
    from contactsync.automation.action_settings import SyncActionSettings
    from contactsync.automation.actions import create_action
    from contactsync.automation.automations import AutomationIn, create_automation
    from contactsync.automation.lists import FieldIn, ListIn, create_account, create_field, create_list
    from contactsync.automation.rules import TriggerSpec

    with engine.begin() as conn:
        account = create_account(conn, name="CLI", now=rt.clock())
        lst = create_list(conn, ListIn(account_id=account, name="Buyers"), now=rt.clock())
        create_field(conn, FieldIn(list_id=lst.id, name="City"), now=rt.clock())
        auto = create_automation(
            conn, rt, AutomationIn(list_id=lst.id, name="All", trigger=TriggerSpec(event="manual"))
        )
        action = create_action(
            conn,
            rt,
            automation_id=auto.id,
            settings=SyncActionSettings(url="https://crm.example/in?c=[#CITY#]"),
        )
    return {"account": account, "list": lst.id, "automation": auto.id, "action": action.id}
