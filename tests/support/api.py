"""Helpers for the API tests: a migrated platform database, an account with a key, and a client
talking to the app served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from contactsync.automation.lists import create_account
from contactsync.db import create_engine
from contactsync.db.migrate import upgrade
from contactsync.servers import platform_server
from contactsync.settings import Settings
from contactsync.tenancy.keys import create_key
from support.listener import serve


@dataclass
class Api:
    """A client of one app, authenticated as ``account_id``; ``count`` reads tables directly."""

    client: httpx.Client
    base_url: str
    engine: sa.Engine
    account_id: int
    key: str
    app: Any = None
    """The app under test (its route table)."""

    def count(self, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
        with self.engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(table)
            return int(conn.execute(query.where(*where) if where else query).scalar_one())

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(path, **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        """Call and assert the status; return the decoded JSON."""
        response = self.client.request(method, path, **kw)
        assert response.status_code == status, response.text
        return response.json() if response.content else None


def automation_with_action(
    api: Api, url: str, *, headers: list[dict[str, str]] | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A list, an automation on ``contact.created`` and its sync action to ``url``, through the API."""
    lst = api.ok("POST", "/api/lists", 201, json={"name": "L"})
    automation = api.ok(
        "POST",
        "/api/automations",
        201,
        json={"list_id": lst["id"], "name": "new", "trigger": {"event": "contact.created"}},
    )
    action = api.ok(
        "POST",
        f"/api/automations/{automation['id']}/actions",
        201,
        json={"url": url, "headers": headers or []},
    )
    return lst, automation, action


def new_account(engine: sa.Engine, name: str = "acme", *, role: str = "owner") -> tuple[int, str]:
    """An account and a fresh API key for it (an owner's, unless ``role`` says otherwise)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        account_id = create_account(conn, name=name, now=now)
        key = create_key(conn, account_id=account_id, name="tests", role=role, now=now).key
    return account_id, key


@contextmanager
def api_client(
    db_url: str, *, run_dispatcher: bool = False, metrics_port: int | None = None, **settings: Any
) -> Iterator[Api]:
    """A migrated database, an app over it and a client with a valid key."""
    upgrade(db_url)
    engine = create_engine(db_url)
    account_id, key = new_account(engine)
    app = platform_server(
        Settings(database_url=db_url, **settings),
        engine=engine,
        run_dispatcher=run_dispatcher,
        metrics_port=metrics_port,
    )
    try:
        with (
            serve(app) as base_url,
            httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client,
        ):
            yield Api(client, base_url, engine, account_id, key, app)
    finally:
        engine.dispose()


class Receiver:
    """A local receiver recording what it got; answers 200 (or ``status``)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Event()

    async def endpoint(self, request: Request) -> PlainTextResponse:
        self.got.append((dict(request.headers), await request.body()))
        self.arrived.set()
        return PlainTextResponse("thanks", status_code=self.status)

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.endpoint, methods=["POST", "GET"])])
