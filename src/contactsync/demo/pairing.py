"""Pairing: the demo's listener accepts every action of the demo's account."""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy as sa

from contactsync.automation.runtime import IssuedSecret
from contactsync.db.sealing import keyring_from_settings
from contactsync.errors import ContactSyncError
from contactsync.listener import secrets as listener_secrets
from contactsync.settings import Settings
from contactsync.wire.sender import display_name

log = logging.getLogger("contactsync.demo")


class Pairing:
    """The demo's listener accepts every action of the demo's account, those created during the demo too.

    The platform's runtime reports each new or rotated action secret (``Runtime.on_secret``); this adds
    it to the listener's Secrets (rotating it in under the same label), exactly what a person does on
    the listener's Secrets page, labelled as the platform names the action (wire/sender.py), and
    reloads the running listener's keys at once. Actions of any other account are not paired: their
    owners pair them by hand, as with any listener.
    """

    def __init__(self, listener_db: sa.Engine, settings: Settings) -> None:
        self.engine = listener_db
        self.keyring = keyring_from_settings(settings, database_url=settings.listener_database_url)
        self.account_id: int | None = None  # known once seeded; secrets issued before wait for it
        self.app_state: Any = None
        self._waiting: list[IssuedSecret] = []

    def issued(self, issued: IssuedSecret) -> None:
        if self.account_id is None:
            self._waiting.append(issued)
        elif issued.account_id == self.account_id:
            try:
                self._register(issued)
            except (ContactSyncError, sa.exc.SQLAlchemyError) as exc:  # never fail the platform's change
                log.warning("action %s not paired with the demo listener: %s", issued.action_id, exc)

    def register_pending(self) -> None:
        waiting, self._waiting = self._waiting, []
        for issued in waiting:
            self.issued(issued)

    def _register(self, issued: IssuedSecret) -> None:
        label = display_name(issued.action_id, issued.automation_name, issued.action_name)
        now_ms = int(time.time() * 1000)
        with self.engine.begin() as conn:
            listener_secrets.pair(conn, self.keyring, label=label, secret=issued.secret, now_ms=now_ms)
        listener = getattr(self.app_state, "listener", None) if self.app_state is not None else None
        if listener is not None:  # running: accepted from the next request on
            listener.book.load(self.engine, now_ms=now_ms)
