"""The CRM forwarder against a real HTTP CRM on 127.0.0.1: mapping, upsert key, auth, retries, SSRF guard."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection, Iterator
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
from contactsync.listener.projection import carried, converged
from contactsync.servers import listener_server
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


def _state(sent: SyncPayload) -> dict[str, Any]:
    """The converged state of a contact the projection has never seen, after ``sent``."""
    delivery = carried(sent)
    assert delivery is not None
    return converged(None, delivery)


def test_request_maps_fields_and_keys_the_upsert() -> None:
    config = CRMConfig.model_validate(_config("https://crm.example", upsert_by="id", key_field="external_id"))
    url, body = request_for(config, _state(payload(77, contact_id=9)))
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
        request_for(CRMConfig.model_validate(_config("https://crm.example")), _state(no_email))
    _, sparse = request_for(config, _state(no_email))
    assert json.loads(sparse) == {"source": "contactsync", "external_id": 3}  # nothing absent sent as null


def test_bad_configs_are_refused() -> None:
    def state(payload: SyncPayload, sections: Collection[str]) -> None:
        return None

    with pytest.raises(ConfigError):
        forwarders([{"name": "x", "url": "https://crm.example", "mapping": {"a": "nope.email"}}], state=state)
    with pytest.raises(ConfigError):
        forwarders([{"name": "x", "url": "https://crm.example", "auth_header": "no colon"}], state=state)
    with pytest.raises(ConfigError, match="needs the SQL projection"):
        forwarders([{"name": "x", "url": "https://crm.example"}], state=None)


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
    settings = Settings(
        listener_database_url=sqlite_url,
        listener_token=TOKEN,
        listener_crm=[_config(base)],
        admin_password=ADMIN_PASSWORD,
    )
    app = listener_server(settings, schedule_s=FAST_RETRIES_S, poll_interval_s=0.05)
    with serve(app) as listener, httpx.Client() as client:
        answer = client.post(f"{listener}/sync/{TOKEN}", content=payload(501).to_form())
        assert answer.status_code == 200
        _wait_for(lambda: _runs(sqlite_url, "crm:acme")[0][0] == "done")
        pages = _admin_pages(listener, "/handlers", "/syncs/501")
    assert "down for maintenance" in pages["/handlers"]  # the attempt log, beside the handler's state
    assert f"PUT {base}/contacts/jane%40example.com" in pages["/handlers"]
    assert "attempt 4" in pages["/syncs/501"]
    assert _runs(sqlite_url, "crm:acme") == [("done", 4, None)]
    assert _runs(sqlite_url, "sql")[0][0] == "done"
    [request] = target.received
    assert request["method"] == "PUT"
    assert request["path"] == "/contacts/jane%40example.com"
    assert request["auth"] == "Bearer s3cret"
    assert request["idempotency"] == "501"
    assert request["body"]["firstname"] == "Jane"
    assert request["body"]["email_key"] == "jane@example.com"
    attempts = _attempts(sqlite_url)
    assert [(a["attempt"], a["ok"], a["status"]) for a in attempts] == [
        (1, False, 500),
        (2, False, 500),
        (3, False, 500),
        (4, True, 200),
    ]
    assert attempts[0]["detail"] == "down for maintenance"
    assert attempts[0]["target"] == f"PUT {base}/contacts/jane%40example.com"
    assert all(a["duration_ms"] >= 0 for a in attempts)


ADMIN_PASSWORD = "correct horse battery staple"


def _admin_pages(listener: str, *paths: str) -> dict[str, str]:
    """The listener admin pages at ``paths``, as a logged-in operator sees them."""
    with httpx.Client(base_url=f"{listener}/admin", follow_redirects=True) as web:
        form = web.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token is not None
        web.post("/login", data={"csrf_token": token.group(1), "next": "", "password": ADMIN_PASSWORD})
        pages = {path: web.get(path) for path in paths}
    assert all(page.status_code == 200 for page in pages.values())
    return {path: page.text for path, page in pages.items()}


def _attempts(url: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(t.handler_attempts).order_by(t.handler_attempts.c.id))
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


def test_an_older_retry_after_a_newer_delivery_leaves_the_crm_with_the_newer_values(
    sqlite_url: str,
) -> None:
    target = CRM(failures=1)  # the older delivery's first attempt fails, its retry comes after the newer one
    with serve(target.app()) as base:
        settings = Settings(
            listener_database_url=sqlite_url,
            listener_token=TOKEN,
            listener_crm=[_config(base, upsert_by="id", key_field="")],
        )
        app = create_app(settings, schedule_s=(0.0, 1.0), poll_interval_s=0.05)
        older = payload(
            100, email="old@example.com", extra={"fields": [{"id": 4, "name": "City", "value": "Bern"}]}
        )
        newer = payload(
            200, email="new@example.com", extra={"fields": [{"id": 4, "name": "City", "value": "Basel"}]}
        )
        with serve(app) as listener, httpx.Client() as client:
            assert client.post(f"{listener}/sync/{TOKEN}", content=older.to_form()).status_code == 200
            _wait_for(lambda: len(_attempts(sqlite_url)) == 1)
            assert client.post(f"{listener}/sync/{TOKEN}", content=newer.to_form()).status_code == 200
            _wait_for(lambda: [r[0] for r in _runs(sqlite_url, "crm:acme")] == ["done", "done"])
    assert [r["idempotency"] for r in target.received] == ["200", "100"]  # the older one's retry came last
    last = target.received[-1]["body"]
    assert last["email"] == "new@example.com"
    assert last["city"] == "Basel"


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
