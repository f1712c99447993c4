"""Owners hear about an endpoint that stops receiving, by e-mail through a real SMTP server on
127.0.0.1: once per disablement or failure streak, only the owners who can sign in, and a mail server
that is down means a later pass tells them instead."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from email import message_from_bytes
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from contactsync.db import platform as t
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery.config import DispatcherConfig
from contactsync.delivery.dispatcher import Dispatcher
from contactsync.delivery.endpoints import EndpointKey
from contactsync.delivery.notify import Mailer, notify
from contactsync.settings import Settings
from contactsync.tenancy import people
from contactsync.tenancy.roles import Role
from support.api import Receiver
from support.delivery import enqueue_many, migrated, request
from support.listener import serve, wait_for
from support.ports import free_port

NOW = datetime(2026, 3, 1, 12, 0, 0)
ENDPOINT = "http://127.0.0.1:9"


class Inbox:
    """What the SMTP server received: (recipients, message)."""

    def __init__(self) -> None:
        self.got: list[tuple[list[str], Any]] = []

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        self.got.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = migrated(db_url, now=NOW)  # account 1 with an action
    with eng.begin() as conn:
        people.add_member(conn, 1, email="owner@example.com", role=Role.OWNER, now=NOW)
        people.add_member(conn, 1, email="second@example.com", role=Role.OWNER, now=NOW)
        people.add_member(conn, 1, email="editor@example.com", role=Role.EDITOR, now=NOW)
        gone = people.find_user(conn, "second@example.com")
        assert gone is not None
        people.set_disabled(conn, gone.id, disabled=True, now=NOW)
        endpoint_rows.ensure(conn, [EndpointKey(1, ENDPOINT)])
    yield eng
    eng.dispose()


def _events(engine: sa.Engine, kind: str) -> list[str]:
    ev = t.endpoint_events.c
    with engine.connect() as conn:
        return list(conn.execute(sa.select(ev.message).where(ev.kind == kind).order_by(ev.id)).scalars())


def test_a_disabled_endpoint_is_told_to_its_owners_once(engine: sa.Engine, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    mailer = Mailer(host="127.0.0.1", port=port, sender="ops@platform.test")
    key = EndpointKey(1, ENDPOINT)
    with engine.begin() as conn:
        endpoint_rows.disable(conn, key, reason="HTTP 410 Gone", now=NOW, kind="gone")
    assert notify(engine, mailer, now=NOW) == 1
    assert notify(engine, mailer, now=NOW + timedelta(hours=1)) == 0  # told once
    ((to, message),) = inbox.got
    assert to == ["owner@example.com"]  # not the editor, not the disabled owner
    assert message["From"] == "ops@platform.test"
    assert ENDPOINT in message["Subject"]
    assert "HTTP 410 Gone" in message.get_payload()
    assert len(_events(engine, "notified")) == 1
    # enabled, then disabled again later: a new disablement, told again
    with engine.begin() as conn:
        endpoint_rows.enable(conn, key, now=NOW + timedelta(days=1))
        endpoint_rows.disable(conn, key, reason="HTTP 410 Gone", now=NOW + timedelta(days=2), kind="gone")
    assert notify(engine, mailer, now=NOW + timedelta(days=2)) == 1
    # the owner's own "disable" is not told back to them
    with engine.begin() as conn:
        endpoint_rows.enable(conn, key, now=NOW + timedelta(days=3))
        endpoint_rows.disable(conn, key, reason="by me", now=NOW + timedelta(days=4), kind="disabled")
    assert notify(engine, mailer, now=NOW + timedelta(days=4)) == 0


def test_a_day_of_failures_is_told_once_per_streak(engine: sa.Engine, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    mailer = Mailer(host="127.0.0.1", port=port)
    e = t.endpoints.c
    with engine.begin() as conn:
        conn.execute(t.endpoints.update().where(e.endpoint == ENDPOINT).values(failing_since=NOW))
    assert notify(engine, mailer, now=NOW + timedelta(hours=23)) == 0  # not a day yet
    assert notify(engine, mailer, now=NOW + timedelta(hours=25)) == 1
    assert "failing for 25 hours" in inbox.got[0][1]["Subject"]
    assert notify(engine, mailer, now=NOW + timedelta(hours=49)) == 0  # same streak
    with engine.begin() as conn:  # it recovered, then failed again: a new streak
        conn.execute(
            t.endpoints.update().where(e.endpoint == ENDPOINT).values(failing_since=NOW + timedelta(days=3))
        )
    assert notify(engine, mailer, now=NOW + timedelta(days=4, hours=1)) == 1


def test_a_mail_server_that_is_down_means_a_later_pass_tells(
    engine: sa.Engine, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    with engine.begin() as conn:
        endpoint_rows.disable(conn, EndpointKey(1, ENDPOINT), reason="HTTP 410 Gone", now=NOW, kind="gone")
    closed = free_port()  # a port nothing answers on
    assert notify(engine, Mailer(host="127.0.0.1", port=closed, timeout_s=2), now=NOW) == 0
    assert _events(engine, "notified") == []
    assert notify(engine, Mailer(host="127.0.0.1", port=port), now=NOW) == 1
    assert len(inbox.got) == 1


def test_the_dispatcher_tells_owners_when_an_endpoint_answers_410(
    engine: sa.Engine, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    receiver = Receiver(status=410)
    with serve(receiver.app) as base:
        enqueue_many(engine, [request(1, f"{base}/hook")], now=NOW)
        config = DispatcherConfig.from_settings(
            Settings(allowed_cidrs=["127.0.0.0/8"], smtp_host="127.0.0.1", smtp_port=port),
            health_interval_s=0.1,
            metrics_interval_s=0.05,
            poll_interval_s=0.05,
        )
        dispatcher = Dispatcher(engine, config=config)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_until_complete, args=(dispatcher.run(),), daemon=True)
        thread.start()
        try:
            wait_for(lambda: len(inbox.got) == 1)
        finally:
            dispatcher.stop()
            thread.join(timeout=30)
            loop.close()
    assert "is disabled" in inbox.got[0][1]["Subject"]
