"""End to end through a real HTTP server: contact and event in, one outbox row out, decoded by real PHP.

Also: the in-process dispatcher (``contactsync serve --with-worker``) delivering to a local receiver,
and test send performing one real signed attempt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from contactsync.db import platform as t
from support import run_php
from support.api import Api, Receiver, api_client
from support.listener import serve
from support.ports import free_port

PHP_DECODE = "parse_str(stream_get_contents(STDIN), $out); echo json_encode($out);"


def _setup(api: Api, *, url: str = "https://hooks.example.com/sync?list=[#LIST_ID#]") -> dict[str, Any]:
    lst = api.ok("POST", "/api/lists", 201, json={"name": "Customers"})
    first = api.ok("POST", f"/api/lists/{lst['id']}/fields", 201, json={"name": "First Name"})
    age = api.ok("POST", f"/api/lists/{lst['id']}/fields", 201, json={"name": "Age", "type": "number"})
    conditions = {
        "op": "and",
        "conditions": [
            {"type": "field", "subject": f"field:{age['id']}", "op": "gte", "value": 18},
            {"type": "activity", "kind": "campaign_open", "ref_id": 7},
        ],
    }
    automation = api.ok(
        "POST",
        "/api/automations",
        201,
        json={
            "list_id": lst["id"],
            "name": "Opened the spring campaign",
            "trigger": {"event": "campaign.opened", "ref_id": 7},
            "conditions": conditions,
        },
    )
    action = api.ok("POST", f"/api/automations/{automation['id']}/actions", 201, json={"url": url})
    return {"list": lst, "first": first, "age": age, "automation": automation, "action": action}


def test_contact_then_event_leaves_one_outbox_row_php_decodes(db_url: str, php: str) -> None:
    with api_client(db_url, public_base_url="https://app.example.com") as api:
        s = _setup(api)
        contact = api.ok(
            "POST",
            f"/api/lists/{s['list']['id']}/contacts",
            201,
            json={
                "email": "jane@example.com",
                "phone": "+15551234567",
                "fields": {"FIRST_NAME": "Jane & Co", "AGE": 40},
            },
        )["contact"]
        assert api.count(t.deliveries) == 0  # contact.created is not this automation's trigger
        event = {
            "kind": "campaign.opened",
            "contact_id": contact["id"],
            "campaign_id": 7,
            "campaign_name": "Spring [sale]",
        }
        fired = api.ok("POST", "/api/events", 202, json={"events": [event]})
        assert len(fired["transactionids"]) == 1
        # the same event again: the automation is `once` per contact
        assert api.ok("POST", "/api/events", 202, json={"events": [event]})["transactionids"] == []
        with api.engine.connect() as conn:
            rows = conn.execute(sa.select(t.deliveries)).all()
        assert len(rows) == 1
        row = rows[0]
        assert str(row.transactionid) == fired["transactionids"][0]
        assert row.method == "POST"
        assert row.url == f"https://hooks.example.com/sync?list={s['list']['id']}"
        decoded = json.loads(run_php(php, PHP_DECODE, bytes(row.body)))
        assert decoded["transactionid"] == str(row.transactionid)
        assert decoded["contact"] == {
            "id": str(contact["id"]),
            "email": "jane@example.com",
            "phone": "+15551234567",
            "profile_url": f"https://app.example.com/contacts/{contact['id']}",
        }
        assert decoded["fields"] == [
            {"id": str(s["first"]["id"]), "name": "First Name", "value": "Jane & Co"},
            {"id": str(s["age"]["id"]), "name": "Age", "value": "40"},
        ]
        assert [(c["id"], c["name"]) for c in decoded["campaigns-opened"]] == [
            ("7", "Spring [sale]")
        ]  # frozen at the first event
        assert all(len(c["open_date"]) == 19 for c in decoded["campaigns-opened"])  # YYYY-MM-DD HH:MM:SS
        assert [(a["id"], a["name"]) for a in decoded["automation-triggered"]] == [
            (str(s["automation"]["id"]), "Opened the spring campaign")
        ]
        assert decoded["lead-status"] == {"score": "0", "label": "Cold"}
        assert set(decoded) == {
            "transactionid",
            "contact",
            "fields",
            "campaigns-opened",
            "automation-triggered",
            "lead-status",
        }
        # the API shows the same frozen request
        listed = api.ok("GET", "/api/deliveries", params={"contact_id": contact["id"]})["items"]
        assert [d["transactionid"] for d in listed] == fired["transactionids"]
        detail = api.ok("GET", f"/api/deliveries/{listed[0]['id']}")
        assert detail["body"].encode() == bytes(row.body)
        assert detail["attempts"] == []
        entries = api.ok("GET", f"/api/contacts/{contact['id']}")["entries"]
        assert [e["automation_id"] for e in entries] == [s["automation"]["id"]]
        assert entries[0]["entered_at"].endswith("Z") or entries[0]["entered_at"].endswith("+00:00")


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    with serve(rec.app) as base:
        yield rec, base


def _poll(api: Api, path: str, until: Any) -> Any:
    deadline = time.monotonic() + 60
    while True:
        body = api.ok("GET", path)
        if until(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_in_process_dispatcher_delivers_and_test_send_reports(
    db_url: str, receiver: tuple[Receiver, str]
) -> None:
    rec, base = receiver
    metrics_port = free_port()
    with api_client(
        db_url, run_dispatcher=True, allow_private_networks=True, metrics_port=metrics_port
    ) as api:
        assert api.get("/metrics").status_code == 404  # not on the public API port
        s = _setup(api, url=f"{base}/hook")
        contact = api.ok(
            "POST",
            f"/api/lists/{s['list']['id']}/contacts",
            201,
            json={"email": "a@example.com", "fields": {"AGE": 30}},
        )["contact"]
        event = {"kind": "campaign.opened", "contact_id": contact["id"], "campaign_id": 7}
        tid = api.ok("POST", "/api/events", 202, json={"events": [event]})["transactionids"][0]
        delivery = api.ok("GET", "/api/deliveries")["items"][0]
        done = _poll(api, f"/api/deliveries/{delivery['id']}", lambda d: d["state"] == "delivered")
        assert [a["status_code"] for a in done["attempts"]] == [200]
        assert done["attempts"][0]["response_body"] == "thanks"
        deadline = time.monotonic() + 30  # counted just after the attempt's commit
        while 'contactsync_delivery_attempts_total{outcome="success"} 1.0' not in (
            metrics := httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        ):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
        assert 'contactsync_deliveries_queue_depth{state="delivered"} 1.0' in metrics
        headers, body = rec.got[0]
        assert headers["webhook-id"] == tid
        assert body == done["body"].encode()
        # test send: one real attempt now, signed, nothing queued
        before = api.count(t.deliveries)
        sent = api.ok(
            "POST", f"/api/actions/{s['action']['id']}/test-send", json={"contact_id": contact["id"]}
        )
        assert sent["response"]["status"] == 200
        assert sent["response"]["outcome"] == "success"
        assert sent["request"]["headers"]["webhook-signature"].startswith("v1,")
        assert len(rec.got) == 2
        assert api.count(t.deliveries) == before
        # endpoint health: disable holds deliveries, enable resumes them
        endpoint = api.ok("GET", "/api/endpoints")[0]
        assert endpoint["endpoint"] == base + ("" if base.count(":") == 2 else ":80")
        assert endpoint["last_success_at"] is not None
        off = api.ok("POST", f"/api/endpoints/{endpoint['id']}/disable", json={"reason": "maintenance"})
        assert off["enabled"] is False
        again = api.ok("POST", f"/api/deliveries/{delivery['id']}/retry")
        assert again["state"] == "pending"
        assert api.ok("GET", f"/api/endpoints/{endpoint['id']}")["waiting"] == 1
        assert api.ok("POST", f"/api/endpoints/{endpoint['id']}/enable")["enabled"] is True
        _poll(
            api,
            f"/api/deliveries/{delivery['id']}",
            lambda d: d["state"] == "delivered" and len(d["attempts"]) == 2,
        )
        assert len(rec.got) == 3
        events = api.ok("GET", f"/api/endpoints/{endpoint['id']}")["events"]
        assert [(e["kind"], e["message"]) for e in events] == [
            ("enabled", "deliveries resumed"),
            ("disabled", "maintenance"),
        ]


def test_test_send_refuses_private_addresses_by_default(db_url: str, receiver: tuple[Receiver, str]) -> None:
    _rec, base = receiver
    with api_client(db_url) as api:
        s = _setup(api, url=f"{base}/hook")
        contact = api.ok(
            "POST", f"/api/lists/{s['list']['id']}/contacts", 201, json={"email": "a@example.com"}
        )["contact"]
        sent = api.ok(
            "POST", f"/api/actions/{s['action']['id']}/test-send", json={"contact_id": contact["id"]}
        )
        assert sent["response"]["status"] is None
        assert sent["response"]["outcome"] == "blocked"
