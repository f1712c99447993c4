"""Browser-test fixtures: the platform (API, admin UI, dispatcher), a listener on 127.0.0.1, and Chromium.

The servers run in one background thread with its own event loop; Playwright's sync API drives
Debian's Chromium. A failing test leaves a screenshot in ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
import uvicorn

from contactsync.automation.action_settings import SyncActionSettings
from contactsync.automation.actions import create_action
from contactsync.automation.automations import AutomationIn, create_automation
from contactsync.automation.contacts import ContactIn, upsert_contact
from contactsync.automation.lists import FieldIn, ListIn, create_account, create_field, create_list
from contactsync.automation.runtime import Runtime
from contactsync.db.engine import create_engine
from contactsync.db.migrate import upgrade
from contactsync.delivery.dispatcher import Dispatcher, DispatcherConfig
from contactsync.settings import Settings
from contactsync.tenancy import people
from contactsync.tenancy.roles import Role
from support import IN_CI
from support.browser import ARTIFACTS, OWNER, PASSWORD, XSS_EMAIL, XSS_NAME, Stack
from support.ports import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page


CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.browser


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _seed(engine: sa.Engine, rt: Runtime, sync_url: str) -> dict[str, int]:
    now = rt.clock()
    with engine.begin() as conn:
        account = create_account(conn, name="Test", now=now)
        lst = create_list(conn, ListIn(account_id=account, name="Customers"), now=now)
        first = create_field(conn, FieldIn(list_id=lst.id, name="First Name"), now=now)
        create_field(conn, FieldIn(list_id=lst.id, name="City"), now=now)
        jane = upsert_contact(
            conn,
            ContactIn(
                list_id=lst.id,
                email="jane.doe@example.com",
                phone="+15551234567",
                fields={"FIRST_NAME": "jane"},
            ),
            now=now,
        ).contact.id
        evil = upsert_contact(
            conn,
            ContactIn(list_id=lst.id, email=XSS_EMAIL, fields={"FIRST_NAME": XSS_NAME, "CITY": XSS_NAME}),
            now=now,
        ).contact.id
        auto = create_automation(
            conn,
            rt,
            AutomationIn.model_validate(
                {
                    "list_id": lst.id,
                    "name": "Seeded",
                    "trigger": {"event": "manual"},
                    "reentry": {"policy": "always"},
                }
            ),
        )
        action = create_action(
            conn,
            rt,
            automation_id=auto.id,
            settings=SyncActionSettings(url=sync_url + "?first=[#FIRST_NAME#]"),
        )
        people.create_user(conn, email=OWNER, password=PASSWORD, now=now)
        people.add_member(conn, account, email=OWNER, role=Role.OWNER, now=now)
    return {
        "list": lst.id,
        "field": first.id,
        "jane": jane,
        "evil": evil,
        "automation": auto.id,
        "action": action.id,
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from contactsync.servers import listener_server, platform_server

    tmp = tmp_path_factory.mktemp("stack")
    pport, lport = free_port(), free_port()
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'platform.db'}",
        listener_database_url=f"sqlite:///{tmp / 'listener.db'}",
        public_base_url=f"http://127.0.0.1:{pport}",
        allowed_cidrs=["127.0.0.0/8"],
        admin_password=PASSWORD,
        session_secret=secrets.token_urlsafe(16),
        listener_token=secrets.token_urlsafe(32),
        poll_interval_s=0.2,
    )
    engine = create_engine(settings.database_url)
    listener_engine = create_engine(settings.listener_database_url)
    upgrade(engine, side="platform")
    upgrade(listener_engine, side="listener")
    rt = Runtime.create(settings, engine=engine)
    sync_url = f"http://127.0.0.1:{lport}/sync/{settings.listener_token}"
    ids = _seed(engine, rt, sync_url)
    platform_app = platform_server(settings, engine=engine, runtime=rt)
    listener_app = listener_server(settings, poll_interval_s=0.2)
    dispatcher = Dispatcher(engine, config=DispatcherConfig.from_settings(settings))
    platform_app.state.contactsync.wake_hooks.append(dispatcher.wake)
    servers = [
        _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        for app, port in ((platform_app, pport), (listener_app, lport))
    ]
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        tasks = [asyncio.create_task(s.serve()) for s in servers]
        runner = asyncio.create_task(dispatcher.run(stop=stop))
        await stop.wait()
        await runner
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    for _ in range(200):
        if all(s.started for s in servers):
            break
        threading.Event().wait(0.05)
    assert all(s.started for s in servers), "servers did not start"
    try:
        yield Stack(
            settings,
            f"http://127.0.0.1:{pport}",
            f"http://127.0.0.1:{lport}",
            sync_url,
            engine,
            listener_engine,
            rt,
            ids,
        )
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()
        engine.dispose()
        listener_engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one module: sync Playwright holds an event loop that must end before other tests."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        if IN_CI:
            pytest.fail("Chromium is required when CI=true")
        pytest.skip("Chromium not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context per test; any dialog (an executed alert) fails the test."""
    context = browser.new_context()
    context.set_default_timeout(15_000)
    pg = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    yield pg
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
        with contextlib.suppress(Exception):
            pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    context.close()
    assert not dialogs, f"a script ran and opened a dialog: {dialogs}"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
