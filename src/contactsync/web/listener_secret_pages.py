"""Listener pages for pairing: the secrets it accepts (add, rotate, remove) and the requests it refused.

Secrets from the configuration are listed read-only; the UI's own are sealed at rest and only ever
shown as masked hints. After each change the listener of this process reloads its keys at once
(other processes within a second, see ``listener.secrets``), so a secret added here is accepted by
the next request, without a restart. Refusals are read newest first, a page at a time by id.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.db.listener import refusals
from contactsync.db.sealing import Keyring, keyring_from_settings
from contactsync.errors import ContactSyncError
from contactsync.listener import secrets as store
from contactsync.listener.refusals import describe
from contactsync.web import paging
from contactsync.web.app import Web
from contactsync.web.platform_pages import form_text
from contactsync.web.security import Session


def routes(web: Web) -> list[BaseRoute]:
    book = web.wiring.secret_book
    own: list[Keyring] = []

    def keyring() -> Keyring:
        if book is not None:
            return book.keyring()
        if not own:
            s = web.settings
            own.append(keyring_from_settings(s, database_url=s.listener_database_url))
        return own[0]

    def now_ms() -> int:
        return int(web.clock_s() * 1000)

    async def changed(request: Request, fn: Any, done: str) -> Response:
        """Run ``fn`` in one transaction, then reload this process's keys; back to the list."""
        try:
            label = await web.write(fn)
        except ContactSyncError as exc:
            return web.redirect(request, "/secrets", err=str(exc))
        if book is not None:
            await run_in_threadpool(book.load, web.engine, now_ms=now_ms())
        return web.redirect(request, "/secrets", msg=done.format(label=label))

    async def secrets_page(request: Request, session: Session) -> Response:
        def load(conn: sa.Connection) -> list[store.Listed]:
            return store.listed(conn, keyring, web.settings.listener_secret)

        try:
            rows = await web.read(load)
            problem = ""
        except ContactSyncError as exc:  # no key to open them (the key file went missing, say)
            rows, problem = [], str(exc)
        return web.render(
            request,
            session,
            "listener/secrets.html",
            rows=rows,
            problem=problem,
            grace_h=int(store.GRACE.total_seconds() // 3600),
            configured=store.CONFIGURED,
        )

    async def secret_add(request: Request, session: Session) -> Response:
        form = await request.form()
        label, secret = form_text(form, "label"), form_text(form, "secret")

        def work(conn: sa.Connection) -> str:
            store.add(conn, keyring(), label=label, secret=secret, now_ms=now_ms())
            return label.strip()

        return await changed(request, work, "secret {label} added: requests signed with it are accepted")

    async def secret_rotate(request: Request, session: Session) -> Response:
        secret_id = int(request.path_params["secret_id"])
        form = await request.form()
        secret = form_text(form, "secret")

        def work(conn: sa.Connection) -> str:
            return store.rotate(conn, keyring(), secret_id, secret=secret, now_ms=now_ms())

        hours = int(store.GRACE.total_seconds() // 3600)
        done = "secret {label} rotated: the previous one is still accepted for " + f"{hours} hours"
        return await changed(request, work, done)

    async def secret_remove(request: Request, session: Session) -> Response:
        secret_id = int(request.path_params["secret_id"])
        return await changed(
            request, lambda conn: store.remove(conn, secret_id), "secret {label} removed: no longer accepted"
        )

    async def refused_page(request: Request, session: Session) -> Response:
        at = paging.seek(request)

        def load(conn: sa.Connection) -> paging.Window[Any]:
            r = refusals.c
            query = sa.select(refusals)
            return paging.window(
                lambda seek, n: conn.execute(paging.past(query, r.id, seek, n)).all(), at, key=lambda x: x.id
            )

        found = await web.read(load)
        return web.render(
            request, session, "listener/refused.html", rows=found.rows, page=found, describe=describe
        )

    return [
        web.page("/secrets", secrets_page),
        web.page("/secrets", secret_add, methods=["POST"]),
        web.page("/secrets/{secret_id:int}/rotate", secret_rotate, methods=["POST"]),
        web.page("/secrets/{secret_id:int}/remove", secret_remove, methods=["POST"]),
        web.page("/refused", refused_page),
    ]
