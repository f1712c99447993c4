"""The account boundary on SQLite and PostgreSQL: ownership is decided on the row itself, ids are never
reused, and the migration gives existing rows their owner."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from contactsync.db import create_engine
from contactsync.db import platform as t
from contactsync.db.migrate import upgrade
from support.api import Api, api_client, new_account

NOW = datetime(2026, 2, 1, 9, 0, 0)


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with api_client(db_url) as client:
        yield client


def _as(api: Api, key: str) -> httpx.Client:
    return httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _ok(client: httpx.Client, method: str, path: str, status: int = 200, **kw: Any) -> Any:
    response = client.request(method, path, **kw)
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def _syncing_list(client: httpx.Client, *, url: str, token: str) -> dict[str, Any]:
    """A list whose new contacts are synced to ``url`` with an ``Authorization`` header."""
    lst = _ok(client, "POST", "/api/lists", 201, json={"name": "L"})
    automation = _ok(
        client,
        "POST",
        "/api/automations",
        201,
        json={"list_id": lst["id"], "name": "new", "trigger": {"event": "contact.created"}},
    )
    action = _ok(
        client,
        "POST",
        f"/api/automations/{automation['id']}/actions",
        201,
        json={"url": url, "headers": [{"name": "Authorization", "value": f"Bearer {token}"}]},
    )
    return {"list": lst, "automation": automation, "action": action}


def test_regression_deleted_ids_are_not_reused_and_do_not_hand_over_deliveries(api: Api) -> None:
    """B deletes its newest contact and automation; A's next ones must not inherit B's deliveries."""
    _, key_b = new_account(api.engine, "B")
    with _as(api, key_b) as b:
        world_b = _syncing_list(b, url="https://b.example.com/hook?e=[#EMAIL#]", token="b-secret-token")
        contact_b = _ok(
            b, "POST", f"/api/lists/{world_b['list']['id']}/contacts", 201, json={"email": "x@b.com"}
        )
        [delivery_b] = _ok(b, "GET", "/api/deliveries")["items"]
        _ok(b, "DELETE", f"/api/contacts/{contact_b['contact']['id']}", 204)
        _ok(b, "DELETE", f"/api/automations/{world_b['automation']['id']}", 204)
        assert _ok(b, "GET", f"/api/deliveries/{delivery_b['id']}")["state"] == "cancelled"
    world_a = _syncing_list(api.client, url="https://a.example.com/hook", token="a-token")
    contact_a = api.ok("POST", f"/api/lists/{world_a['list']['id']}/contacts", 201, json={"email": "y@a.com"})
    assert contact_a["contact"]["id"] != contact_b["contact"]["id"]
    assert world_a["automation"]["id"] != world_b["automation"]["id"]
    listed = api.ok("GET", "/api/deliveries")["items"]
    assert [d["url"] for d in listed] == ["https://a.example.com/hook"]
    for path in (
        f"/api/deliveries?contact_id={contact_b['contact']['id']}",
        f"/api/deliveries?automation_id={world_b['automation']['id']}",
    ):
        assert api.ok("GET", path)["items"] == []
    assert api.get(f"/api/deliveries/{delivery_b['id']}").status_code == 404
    assert api.post(f"/api/deliveries/{delivery_b['id']}/retry").status_code == 404
    assert api.post(f"/api/deliveries/{delivery_b['id']}/cancel").status_code == 404
    for response in (api.get("/api/deliveries"), api.get("/api/endpoints")):
        assert "b.example.com" not in response.text
        assert "b-secret-token" not in response.text


def _legacy_world(engine: sa.Engine) -> dict[str, int]:
    """Rows as revision 0001 stored them: two accounts sharing an endpoint, one orphaned delivery."""
    ids: dict[str, int] = {}
    with engine.begin() as conn:

        def insert(table: str, **values: Any) -> int:
            typed = (
                sa.column(k, sa.JSON() if isinstance(v, dict | list) else None) for k, v in values.items()
            )
            tbl = sa.table(table, *typed, sa.column("id"))
            return int(conn.execute(sa.insert(tbl).values(**values).returning(tbl.c.id)).scalar_one())

        for name in ("a", "b"):
            account = ids[f"account_{name}"] = insert("accounts", name=name, created_at=NOW)
            lst = insert("lists", account_id=account, name="l", created_at=NOW)
            ids[f"contact_{name}"] = insert(
                "contacts",
                list_id=lst,
                email=f"{name}@x.com",
                email_key=f"{name}@x.com",
                phone="",
                status="subscribed",
                lead_score=0,
                created_at=NOW,
                updated_at=NOW,
            )
            automation = ids[f"automation_{name}"] = insert(
                "automations",
                list_id=lst,
                name="n",
                trigger="manual",
                trigger_fields=[],
                trigger_filter={},
                conditions={},
                reentry="once",
                status="active",
                created_at=NOW,
                updated_at=NOW,
            )
            action = ids[f"action_{name}"] = insert(
                "actions",
                automation_id=automation,
                kind="sync_contact",
                settings={},
                secret="whsec_x",
                endpoint="https://shared.test:443",
                created_at=NOW,
                updated_at=NOW,
            )
            insert(
                "automation_entries",
                automation_id=automation,
                contact_id=ids[f"contact_{name}"],
                entered_at=NOW,
            )
            insert(
                "manual_runs",
                automation_id=automation,
                state="completed",
                cursor_contact_id=0,
                total=1,
                scanned=1,
                matched=1,
                enqueued=1,
                started_at=NOW,
                updated_at=NOW,
            )
            for n, kind in enumerate(("action", "automation_only", "contact_only")):
                row = {
                    "action": {"action_id": action, "automation_id": automation},
                    "automation_only": {"automation_id": automation},
                    "contact_only": {"contact_id": ids[f"contact_{name}"]},
                }[kind]
                delivery = ids[f"delivery_{name}_{kind}"] = insert(
                    "deliveries",
                    transactionid=100 * account + n,
                    endpoint="https://shared.test:443",
                    method="POST",
                    url=f"https://shared.test/{name}",
                    headers={},
                    body=b"",
                    content_type="",
                    state="pending",
                    attempt_count=1,
                    next_attempt_at=NOW,
                    created_at=NOW,
                    updated_at=NOW,
                    **row,
                )
                insert(
                    "delivery_attempts",
                    delivery_id=delivery,
                    number=1,
                    started_at=NOW,
                    duration_ms=1.0,
                    response_headers={},
                    response_body=b"",
                    outcome="http_5xx",
                )
        ids["orphan"] = insert(
            "deliveries",
            transactionid=999,
            endpoint="https://gone.test:443",
            method="GET",
            url="https://gone.test/",
            headers={},
            body=b"",
            content_type="",
            state="pending",
            attempt_count=0,
            next_attempt_at=NOW,
            created_at=NOW,
            updated_at=NOW,
        )
        insert("endpoints", endpoint="https://shared.test:443", failing_since=NOW, max_in_flight=3)
        insert(
            "endpoint_events",
            endpoint="https://shared.test:443",
            kind="gone",
            message="410 from b",
            created_at=NOW,
        )
    return ids


def test_migration_gives_every_row_its_owner_and_splits_shared_endpoints(db_url: str) -> None:
    upgrade(db_url, side="platform", revision="0001")
    engine = create_engine(db_url)
    try:
        ids = _legacy_world(engine)
        upgrade(engine, side="platform")
        with engine.connect() as conn:
            owner = dict(conn.execute(sa.select(t.deliveries.c.id, t.deliveries.c.account_id)).all())
            for name in ("a", "b"):
                for kind in ("action", "automation_only", "contact_only"):
                    assert owner[ids[f"delivery_{name}_{kind}"]] == ids[f"account_{name}"]
            assert ids["orphan"] not in owner  # no account leads to it: unsendable and invisible
            attempts = conn.execute(
                sa.select(t.delivery_attempts.c.delivery_id, t.delivery_attempts.c.account_id)
            )
            assert all(owner[d] == a for d, a in attempts)
            for table in (t.automation_entries, t.manual_runs):
                got = set(conn.execute(sa.select(table.c.automation_id, table.c.account_id)).all())
                assert got == {
                    (ids["automation_a"], ids["account_a"]),
                    (ids["automation_b"], ids["account_b"]),
                }
            split = conn.execute(
                sa.select(t.endpoints.c.account_id, t.endpoints.c.failing_since, t.endpoints.c.max_in_flight)
            ).all()
            assert sorted(split) == [(ids["account_a"], NOW, 3), (ids["account_b"], NOW, 3)]
            # that notification may name either account's URL: it is not handed to both
            assert conn.execute(sa.select(sa.func.count()).select_from(t.endpoint_events)).scalar() == 0
            if conn.dialect.name == "sqlite":
                ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'contacts'").scalar()
                assert "AUTOINCREMENT" in str(ddl)
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        with engine.begin() as conn:  # the newest contact is deleted: its id is not handed out again
            conn.execute(t.contacts.delete().where(t.contacts.c.id == ids["contact_b"]))
        with engine.begin() as conn:
            lst = conn.execute(sa.select(sa.func.min(t.lists.c.id))).scalar_one()
            new = conn.execute(
                t.contacts.insert()
                .values(list_id=lst, email="n@x.com", email_key="n@x.com", created_at=NOW, updated_at=NOW)
                .returning(t.contacts.c.id)
            ).scalar_one()
        assert new > ids["contact_b"]
    finally:
        engine.dispose()
