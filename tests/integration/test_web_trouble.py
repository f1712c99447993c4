"""Failures in plain sight, over real HTTP with the real dispatcher (SQLite and PostgreSQL): a delivery
whose attempts fail is "retrying" on the dashboard, the automations list, the automation's page and
the deliveries page, while another automation to the same host stays healthy; "retry now" brings
its next attempt forward."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from support.api import Api, api_client
from support.listener import serve
from support.web import Ui, person, sign_in

EDITOR = "ops@example.com"


def _text(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


@pytest.fixture
def receiver() -> Iterator[str]:
    """``/ok`` answers 200; ``/refuse`` 401, as a listener that does not know the secret."""

    async def ok(_: Request) -> PlainTextResponse:
        return PlainTextResponse("thanks")

    async def refuse(_: Request) -> PlainTextResponse:
        return PlainTextResponse("no signature matches", status_code=401)

    app = Starlette(routes=[Route("/ok", ok, methods=["POST"]), Route("/refuse", refuse, methods=["POST"])])
    with serve(app) as base:
        yield base


def _until(api: Api, path: str, check: Callable[[Any], bool]) -> Any:
    deadline = time.monotonic() + 60
    while not check(body := api.ok("GET", path)):
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    return body


def _automation(api: Api, list_id: int, name: str, url: str) -> tuple[int, int]:
    body = {"list_id": list_id, "name": name, "trigger": {"event": "contact.created"}}
    auto = api.ok("POST", "/api/automations", 201, json=body)["id"]
    # the second attempt an hour later: the delivery stays retrying while the test looks
    action = api.ok(
        "POST",
        f"/api/automations/{auto}/actions",
        201,
        json={"url": url, "retry_schedule_s": [0, 3600, 3600]},
    )
    return auto, action["id"]


def test_a_refused_automation_is_retrying_everywhere_and_its_neighbour_healthy(
    db_url: str, receiver: str
) -> None:
    with api_client(
        db_url, run_dispatcher=True, allow_private_networks=True, session_secret="s", admin_password="op pass"
    ) as api:
        lid = api.ok("POST", "/api/lists", 201, json={"name": "Customers"})["id"]
        good, _ = _automation(api, lid, "Welcome", f"{receiver}/ok")
        bad, bad_action = _automation(api, lid, "New CRM sync", f"{receiver}/refuse")
        person(api.engine, EDITOR, account_id=api.account_id, role="editor")
        with closing(sign_in(api.base_url, EDITOR)) as ui:
            calm = _text(ui.get("/").text)
            assert "Nothing is retrying" in calm

            api.ok("POST", f"/api/lists/{lid}/contacts", 201, json={"email": "a@x.com"})
            refused = _until(
                api,
                "/api/deliveries",
                lambda page: (
                    {(d["automation_id"], d["state"], d["attempt_count"]) for d in page["items"]}
                    == {(good, "delivered", 1), (bad, "pending", 1)}
                ),
            )
            delivery = next(d for d in refused["items"] if d["automation_id"] == bad)
            _looks_retrying(ui, good, bad, bad_action, delivery["id"])

            # retry now: the next attempt, an hour away, happens at once (and fails again)
            ui.post(f"/deliveries/{delivery['id']}/retry")
            again = _until(api, f"/api/deliveries/{delivery['id']}", lambda d: d["attempt_count"] == 2)
            assert again["state"] == "pending"
            assert [a["status_code"] for a in again["attempts"]] == [401, 401]


def _looks_retrying(ui: Ui, good: int, bad: int, bad_action: int, delivery_id: int) -> None:
    dashboard = ui.get("/").text
    text = _text(dashboard)
    assert re.search(r'data-state="retrying">1<', dashboard)
    assert "1 delivery is retrying: every attempt so far failed." in text
    assert "Nothing is retrying" not in text
    table = _text(re.search(r'<table id="troubles">.*?</table>', dashboard, re.S).group(0))  # type: ignore[union-attr]
    assert "New CRM sync to 127.0.0.1" in table  # an unnamed action by where it sends, not its id
    assert f'action={bad_action}"' in dashboard
    assert "HTTP 401 " in table
    assert "Welcome" not in table

    listing = ui.get("/automations").text
    level = dict(re.findall(r'<a href="/automations/(\d+)">.*?data-level="(\w+)"', listing, re.S))
    assert level == {str(good): "healthy", str(bad): "failing"}
    assert "1 retrying" in _text(listing)

    page = _text(ui.get(f"/automations/{bad}").text)
    assert "Health: failing · 1 retrying" in page
    assert "Health: healthy · last success" in _text(ui.get(f"/automations/{good}").text)

    retrying = ui.get("/deliveries", params={"state": "retrying"}).text
    assert re.findall(r'<a href="/deliveries/(\d+)">', retrying) == [str(delivery_id)]
    assert "retrying next" in _text(retrying)
    assert "New CRM sync · to 127.0.0.1" in _text(retrying)  # names, not ids
    assert ">a@x.com</a>" in retrying
    detail = ui.get(f"/deliveries/{delivery_id}").text
    assert 'id="retry"' in detail
    assert "Sent by New CRM sync · to 127.0.0.1" in _text(detail)
    data = _text(re.search(r'<table class="kv" id="sent-data">.*?</table>', detail, re.S).group(0))  # type: ignore[union-attr]
    assert "contact[email] a@x.com" in data  # the form body decoded, key by key
    assert "refused (4xx)" in _text(detail)
