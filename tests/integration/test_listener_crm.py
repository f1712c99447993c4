"""The CRM forwarder against a real HTTP CRM on 127.0.0.1: mapping, upsert key, auth, retries, SSRF guard."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contactsync.db import listener as t
from contactsync.db.engine import create_engine
from contactsync.errors import ConfigError, PayloadError
from contactsync.listener.app import create_app
from contactsync.listener.crm import CRMConfig, forwarders, request_for
from contactsync.settings import Settings
from contactsync.wire.payload import SyncPayload
from support.listener import TOKEN, payload, serve

FAST_RETRIES_S = (0.0, *([0.05] * 100))
MAPPING = {
    "email": "contact.email",
    "phone": "contact.phone",
    "firstname": "fields.First Name",
    "city": "fields#4",
    "lifecycle": "lead-status.label",
    "source": "=contactsync",
    "opens": "campaigns-opened",
}


class CRM:
    """A CRM that fails its first ``failures`` requests with 500, then accepts."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[dict[str, Any]] = []

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        if self.failures > 0:
            self.failures -= 1
            return Response("down for maintenance", 500)
        self.received.append(
            {
                "method": request.method,
                "path": request.scope["raw_path"].decode(),
                "auth": request.headers.get("authorization"),
                "idempotency": request.headers.get("idempotency-key"),
                "body": json.loads(body),
            }
        )
        return Response('{"ok":true}', 200, media_type="application/json")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/contacts/{key}", self.endpoint, methods=["PUT", "POST"])])


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _config(base: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "acme",
        "url": f"{base}/contacts/{{key}}",
        "method": "PUT",
        "auth_header": "Authorization: Bearer s3cret",
        "mapping": MAPPING,
        "upsert_by": "email",
        "key_field": "email_key",
        "allow_private_networks": True,
    }
    config.update(overrides)
    return config


def test_request_maps_fields_and_keys_the_upsert() -> None:
    config = CRMConfig.model_validate(_config("https://crm.example", upsert_by="id", key_field="external_id"))
    url, body = request_for(config, payload(77, contact_id=9))
    assert url == "https://crm.example/contacts/9"
    assert json.loads(body) == {
        "email": "jane@example.com",
        "phone": "+15551234567",
        "firstname": "Jane",
        "city": "Zürich & Co",
        "lifecycle": "Warm",
        "source": "contactsync",
        "opens": [{"id": 7, "name": "Spring", "open_date": "2026-03-01 10:00:00"}],
        "external_id": 9,
    }
    no_email = SyncPayload.from_wire({"transactionid": "1", "contact": {"id": 3}})
    with pytest.raises(PayloadError):
        request_for(CRMConfig.model_validate(_config("https://crm.example")), no_email)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConfigError):
        forwarders([{"name": "x", "url": "https://crm.example", "mapping": {"a": "nope.email"}}])
    with pytest.raises(ConfigError):
        forwarders([{"name": "x", "url": "https://crm.example", "auth_header": "no colon"}])


@pytest.fixture
def crm() -> Iterator[tuple[CRM, str]]:
    target = CRM(failures=3)
    with serve(target.app()) as base:
        yield target, base


def _runs(url: str, handler: str) -> list[tuple[str, int, str | None]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.select(t.handler_runs.c.state, t.handler_runs.c.attempts, t.handler_runs.c.last_error)
            return [tuple(r) for r in conn.execute(query.where(t.handler_runs.c.handler == handler))]
    finally:
        engine.dispose()


def test_syncs_reach_the_crm_after_it_recovers(crm: tuple[CRM, str], sqlite_url: str) -> None:
    target, base = crm
    settings = Settings(listener_database_url=sqlite_url, listener_token=TOKEN, listener_crm=[_config(base)])
    app = create_app(settings, schedule_s=FAST_RETRIES_S, poll_interval_s=0.05)
    with serve(app) as listener, httpx.Client() as client:
        answer = client.post(f"{listener}/sync/{TOKEN}", content=payload(501).to_form())
        assert answer.status_code == 200
        _wait_for(lambda: _runs(sqlite_url, "crm:acme")[0][0] == "done")
    assert _runs(sqlite_url, "crm:acme") == [("done", 4, None)]
    assert _runs(sqlite_url, "sql")[0][0] == "done"
    [request] = target.received
    assert request["method"] == "PUT"
    assert request["path"] == "/contacts/jane%40example.com"
    assert request["auth"] == "Bearer s3cret"
    assert request["idempotency"] == "501"
    assert request["body"]["firstname"] == "Jane"
    assert request["body"]["email_key"] == "jane@example.com"


def test_private_addresses_are_refused_unless_allowed(crm: tuple[CRM, str], sqlite_url: str) -> None:
    _, base = crm
    config = _config(base, allow_private_networks=False)
    settings = Settings(listener_database_url=sqlite_url, listener_token=TOKEN, listener_crm=[config])
    app = create_app(settings, schedule_s=(0.0, 0.05), poll_interval_s=0.05)
    with serve(app) as listener, httpx.Client() as client:
        client.post(f"{listener}/sync/{TOKEN}", content=payload(502).to_form())
        _wait_for(lambda: _runs(sqlite_url, "crm:acme")[0][0] == "failed")
    [(_, attempts, error)] = _runs(sqlite_url, "crm:acme")
    assert attempts == 2
    assert error is not None
    assert "blocked" in error
