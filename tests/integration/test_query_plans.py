"""Plan tests, not timing tests: every query the daily API calls run must reach the big tables
(deliveries, attempts, contacts, activity, audit, entries) through an index, never a full scan.

A few hundred thousand rows are generated in SQL, statistics are refreshed, then every GET route is
called over HTTP while the statements it runs are captured; each SELECT is EXPLAINed with the same
parameters. A new route or page whose query forgets its index fails here, whatever the machine's speed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from contactsync.api.app import operations
from contactsync.api.deps import needed_role
from contactsync.api.keys import create_key
from support.api import Api, api_client

CONTACTS = 60_000
DELIVERIES = 200_000
BIG = {
    "deliveries",
    "delivery_attempts",
    "contacts",
    "activities",
    "audit_log",
    "automation_entries",
    "field_values",
    "reentry_gates",
}
"""Tables that grow with traffic; anything else (accounts, lists, automations, keys…) stays small."""
SMALL = {
    "accounts",
    "lists",
    "fields",
    "automations",
    "actions",
    "endpoints",
    "api_keys",
    "users",
    "memberships",
    "lead_status_thresholds",
    "manual_runs",
    "endpoint_events",
    "alembic_version",
}


def _series(dialect: str, n: int) -> str:
    if dialect == "postgresql":
        return f"SELECT g AS n FROM generate_series(1, {n}) AS g"
    return f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) SELECT n FROM s"


def _seed(api: Api, ids: dict[str, int]) -> None:
    """Bulk rows for the caller's account (and another account's deliveries), in SQL: seconds, not minutes."""
    engine = api.engine
    dialect = engine.dialect.name
    now = "CURRENT_TIMESTAMP"
    with engine.begin() as conn:
        sql = conn.exec_driver_sql
        first = int(conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM contacts")).scalar_one()) + 1
        sql(
            "INSERT INTO contacts (list_id, email, email_key, phone, status, lead_score, created_at, "
            "updated_at) "
            f"SELECT {ids['list']}, 'c' || n || '@example.com', 'c' || n || '@example.com', '', 'active', 0, "
            f"{now}, {now} FROM ({_series(dialect, CONTACTS)}) AS s"
        )
        sql(
            f"INSERT INTO field_values (contact_id, field_id, value) "
            f"SELECT id, {ids['field']}, 'Paris' FROM contacts WHERE list_id = {ids['list']}"
        )
        sql(
            "INSERT INTO automation_entries (account_id, automation_id, contact_id, entered_at) "
            f"SELECT {ids['account']}, {ids['automation']}, id, {now} "
            f"FROM contacts WHERE list_id = {ids['list']}"
        )
        sql(
            "INSERT INTO reentry_gates (automation_id, contact_id, last_entered_at) "
            f"SELECT {ids['automation']}, id, {now} FROM contacts WHERE list_id = {ids['list']}"
        )
        sql(
            f"INSERT INTO activities (contact_id, kind, ref_id, name, url, occurred_at) "
            f"SELECT {first} + ({_mod('n', CONTACTS)}), 'page_visit', NULL, '', '/p', {now} "
            f"FROM ({_series(dialect, 3 * CONTACTS)}) AS s"
        )
        states = f"CASE {_mod('n', 10)} WHEN 0 THEN 'failed' WHEN 1 THEN 'pending' ELSE 'delivered' END"
        for account, action, count, offset in (
            (ids["account"], ids["action"], DELIVERIES, 0),
            (ids["other_account"], None, DELIVERIES // 4, DELIVERIES),
        ):
            sql(
                "INSERT INTO deliveries (transactionid, account_id, action_id, automation_id, contact_id, "
                "endpoint, method, url, headers, body, content_type, state, attempt_count, next_attempt_at, "
                "created_at, updated_at) "
                f"SELECT 900000000 + {offset} + n, {account}, {action or 'NULL'}, {ids['automation']}, "
                f"{first} + ({_mod('n', CONTACTS)}), 'http://127.0.0.1:9', 'POST', "
                "'http://127.0.0.1:9/hook', '{}', "
                f"{_blob(dialect)}, 'application/x-www-form-urlencoded', {states}, 1, {now}, {now}, {now} "
                f"FROM ({_series(dialect, count)}) AS s"
            )
        sql(
            "INSERT INTO delivery_attempts (delivery_id, account_id, number, started_at, duration_ms, "
            "status_code, response_headers, response_body, outcome) "
            f"SELECT id, account_id, 1, {now}, 1.0, 200, '{{}}', {_blob(dialect)}, 'success' FROM deliveries"
        )
        sql(
            "INSERT INTO audit_log (at, account_id, actor_kind, actor_label, action, target_type, detail) "
            f"SELECT {now}, {ids['account']}, 'cli', 'cli:seed', 'list.create', 'list', '{{}}' "
            f"FROM ({_series(dialect, CONTACTS)}) AS s"
        )
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def _mod(column: str, m: int) -> str:
    """``column`` modulo ``m`` in integer arithmetic both databases share (no ``%``: a DBAPI placeholder)."""
    return f"({column} - ({column} / {m}) * {m})"


def _blob(dialect: str) -> str:
    return "decode('', 'hex')" if dialect == "postgresql" else "X''"


class Capture:
    """The SELECTs an engine runs while ``on``."""

    def __init__(self, engine: sa.Engine) -> None:
        self.on = False
        self.seen: list[tuple[str, Any]] = []
        sa.event.listen(engine, "before_cursor_execute", self._record)

    def _record(
        self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool
    ) -> None:
        if self.on and not many and statement.lstrip().upper().startswith(("SELECT", "WITH")):
            self.seen.append((statement, parameters))


def _scans(conn: sa.Connection, statement: str, parameters: Any) -> list[str]:
    """Full scans of tables that grow (PostgreSQL: ``Seq Scan`` nodes; SQLite: ``SCAN t`` lines)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    if conn.dialect.name == "postgresql":
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        plan = cursor.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        found: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in BIG:
                found.append(f"Seq Scan on {node['Relation Name']}")
            for child in node.get("Plans", []):
                walk(child)

        walk(plan[0]["Plan"])
        return found
    cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
    lines = [row[3] for row in cursor.fetchall()]
    plain = [m.group(1) for line in lines if (m := re.fullmatch(r"SCAN (\w+)", line))]
    return [f"SCAN {name}" for name in plain if name not in SMALL]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, dict[str, int], Capture]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('plans') / 'p.db'}"
    else:
        url = request.getfixturevalue("pg_module_url")
    with api_client(url) as api:
        lst = api.ok("POST", "/api/lists", 201, json={"name": "Big"})
        field = api.ok("POST", f"/api/lists/{lst['id']}/fields", 201, json={"name": "City"})
        automation = api.ok(
            "POST",
            "/api/automations",
            201,
            json={"list_id": lst["id"], "name": "A", "trigger": {"event": "manual"}},
        )
        action = api.ok(
            "POST",
            f"/api/automations/{automation['id']}/actions",
            201,
            json={"url": "http://127.0.0.1:9/hook"},
        )
        contact = api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": "first@example.com"})
        other = api.ok("POST", "/api/accounts", 403, json={"name": "B"})  # an account key is no operator
        assert other["error"] == "forbidden"
        with api.engine.begin() as conn:
            from contactsync.automation.lists import create_account
            from contactsync.automation.runtime import utc_now

            other_account = create_account(conn, name="B", now=utc_now())
            operator = create_key(conn, account_id=None, role="operator", name="op", now=utc_now()).key
        ids = {
            "account": api.account_id,
            "other_account": other_account,
            "list": lst["id"],
            "field": field["id"],
            "automation": automation["id"],
            "action": action["id"],
            "contact": contact["contact"]["id"],
        }
        _seed(api, ids)
        with api.engine.connect() as conn:
            ids["busy_contact"] = ids["contact"] + 1  # the first generated contact: it has activity
            ids["delivery"] = int(
                conn.execute(
                    sa.text("SELECT max(id) FROM deliveries WHERE account_id = :a"), {"a": api.account_id}
                ).scalar_one()
            )
            ids["endpoint"] = int(conn.execute(sa.text("SELECT min(id) FROM endpoints")).scalar_one() or 0)
        ids["operator_key"] = 0
        api.client.headers["x-operator"] = operator
        yield api, ids, Capture(api.engine)


LINEAR = {
    "/api/automations/{automation_id}/dry-run": "counts a whole list on request, as the manual run it "
    "previews walks it",
}
"""Reads that are linear in a list by design (not daily views); each says why."""
FILTERS = {
    "/api/deliveries": [
        {},
        {"state": "pending"},
        {"state": "failed"},
        {"contact_id": "{contact}"},
        {"automation_id": "{automation}"},
        {"action_id": "{action}"},
        {"cursor": "{delivery}"},
    ],
    "/api/audit": [{}, {"action": "list."}, {"actor": "seed"}],
    "/api/lists/{list_id}/contacts": [{}, {"email": "c77@example.com"}],
    "/api/automations/{automation_id}/explain": [{"contact_id": "{contact}"}],
    "/api/contacts/{contact_id}/activity": [{}, {"kind": "page_visit"}],
}
PATH_IDS = {
    "list_id": "list",
    "contact_id": "contact",
    "automation_id": "automation",
    "action_id": "action",
    "delivery_id": "delivery",
    "endpoint_id": "endpoint",
}


def _calls(api: Api, ids: dict[str, int]) -> Iterator[tuple[str, dict[str, str], bool]]:
    """Every GET route of the API with the seeded ids (and its filters); ``operator``: call with the
    operator key."""
    for full, route in operations():
        if "GET" not in route.methods or full in LINEAR:
            continue
        params = re.findall(r"{(\w+)}", full)
        if any(p not in PATH_IDS for p in params if p not in ("run_id", "account_id", "user_id")):
            pytest.fail(f"{full}: tell the plan test which seeded id {params} name")
        path = full
        for p in params:
            path = path.replace("{" + p + "}", str(ids.get(PATH_IDS.get(p, ""), 1)))
        roles = {needed_role(d.call) for d in route.dependant.dependencies}
        for query in FILTERS.get(full, [{}]):
            yield path, {k: v.format(**ids) for k, v in query.items()}, "operator" in roles


def test_daily_api_reads_use_indexes(world: tuple[Api, dict[str, int], Capture]) -> None:
    api, ids, capture = world
    problems: list[str] = []
    explained = 0
    for path, query, operator in _calls(api, ids):
        headers = {"Authorization": f"Bearer {api.client.headers['x-operator']}"} if operator else {}
        capture.seen.clear()
        capture.on = True
        try:
            response = api.client.get(path, params=query, headers=headers)
        finally:
            capture.on = False
        assert response.status_code in (200, 404), (path, query, response.text)
        with api.engine.connect() as conn:
            for statement, parameters in capture.seen:
                explained += "deliveries" in statement
                for scan in _scans(conn, statement, parameters):
                    problems.append(f"GET {path} {query}: {scan}\n    {' '.join(statement.split())[:300]}")
    assert not problems, "\n".join(problems)
    assert explained >= 10, "the reads of the delivery views were not captured"
