"""Plan tests, not timing tests: every query the daily API calls and every admin page run must reach
the tables that grow (deliveries, attempts, contacts, activity, audit, entries; the listener's inbox,
handler runs and projection) through an index, never a full scan.

A few hundred thousand rows are generated in SQL on each side, statistics are refreshed, then every
GET route of the API and every GET page of both admin UIs is called over HTTP (with its filters and
searches, and following its "newer / older" links) while the statements it runs are captured; each
SELECT is EXPLAINed with the same parameters. A new route or page whose query forgets its index
fails here, whatever the machine's speed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import sqlalchemy as sa

from contactsync.api.app import operations
from contactsync.api.deps import needed_role
from contactsync.automation.runtime import Runtime, utc_now
from contactsync.automation.sync_activity import BATCH, record_batch
from contactsync.db import create_engine
from contactsync.db.counting import CAP
from contactsync.db.metadata import listener_metadata, platform_metadata
from contactsync.db.migrate import upgrade
from contactsync.settings import Settings
from contactsync.tenancy.keys import create_key
from contactsync.tenancy.roles import OPERATOR
from contactsync.web.app import page_table
from support.api import Api, api_client, new_account
from support.listener import SECRET, TOKEN, serve
from support.ports import free_port
from support.web import PASSWORD, Ui, listener_sign_in, person, sign_in

CONTACTS = 60_000
DELIVERIES = 200_000
INBOX = 100_000
BACKLOG = 40_000
"""Failed runs of one handler in the listener's inbox (more than a page may read)."""
FORM = "application/x-www-form-urlencoded"
OPERATOR_EMAIL = "operator@example.com"
OWNER_EMAIL = "owner@example.com"
TINY_EMAIL = "tiny@example.com"
BIG = {
    "deliveries",
    "delivery_attempts",
    "contacts",
    "activities",
    "audit_log",
    "automation_entries",
    "field_values",
    "reentry_gates",
    "listener_inbox",
    "listener_handler_runs",
    "listener_handler_attempts",
    "listener_refusals",
    *(t.name for t in listener_metadata.sorted_tables if t.name.startswith("sync_")),
}
"""Tables that grow with traffic; anything else (accounts, lists, automations, keys…) stays small."""
SMALL = {
    "accounts",
    "lists",
    "fields",
    "automations",
    "actions",
    "endpoints",
    "endpoint_slots",
    "endpoint_buckets",
    "api_keys",
    "users",
    "memberships",
    "lead_status_thresholds",
    "manual_runs",
    "endpoint_events",
    "dispatchers",
    "admin_sessions",
    "job_cursors",
    "listener_secrets",
}
TABLES = {t.name for t in (*platform_metadata.sorted_tables, *listener_metadata.sorted_tables)}
assert not TABLES - BIG - SMALL, f"say whether these tables grow: {TABLES - BIG - SMALL}"


def _series(dialect: str, n: int) -> str:
    if dialect == "postgresql":
        return f"SELECT g AS n FROM generate_series(1, {n}) AS g"
    return f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) SELECT n FROM s"


def _mod(column: str, m: int) -> str:
    """``column`` modulo ``m`` in integer arithmetic both databases share (no ``%``: a DBAPI placeholder)."""
    return f"({column} - ({column} / {m}) * {m})"


def _blob(dialect: str) -> str:
    return "decode('', 'hex')" if dialect == "postgresql" else "X''"


def _seconds_ago(dialect: str, column: str) -> str:
    """A timestamp ``column`` seconds before now (attempts spread over days: the last hour is a slice)."""
    if dialect == "postgresql":
        return f"(LOCALTIMESTAMP - {column} * INTERVAL '1 second')"
    return f"datetime('now', '-' || {column} || ' seconds')"


def _seed(api: Api, ids: dict[str, int]) -> None:
    """Bulk rows for the caller's account (and another account's deliveries), in SQL: seconds, not minutes."""
    engine = api.engine
    dialect = engine.dialect.name
    now = "CURRENT_TIMESTAMP"
    with engine.begin() as conn:
        sql = conn.exec_driver_sql
        first = int(conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM contacts")).scalar_one()) + 1
        for list_id, count, tag in (
            (ids["list"], CONTACTS, "c"),
            (ids["small_list"], CONTACTS // 2, "s"),  # imported after the big one: its newest ids
            (ids["tiny_list"], 100, "t"),
        ):
            sql(
                "INSERT INTO contacts (list_id, email, email_key, phone, status, lead_score, created_at, "
                "updated_at) "
                f"SELECT {list_id}, '{tag}' || n || '@example.com', '{tag}' || n || '@example.com', "
                f"'+1555' || n, 'active', 0, {now}, {now} FROM ({_series(dialect, count)}) AS s"
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
        states = (
            f"CASE WHEN {_mod('n', 1000)} = 2 THEN 'in_flight' "
            f"ELSE CASE {_mod('n', 10)} WHEN 0 THEN 'failed' WHEN 1 THEN 'pending' ELSE 'delivered' END END"
        )
        # interleaved in time: one in seven is another account's, one in two thousand a tiny account's,
        # and one in a thousand of the account's own goes to a rarely used automation (and its action)
        tiny, mine = f"{_mod('n', 2000)} = 7", f"{_mod('n', 7)} <> 0"
        rare = f"{_mod('n', 1000)} = 5"
        sql(
            "INSERT INTO deliveries (transactionid, account_id, action_id, automation_id, contact_id, "
            "endpoint, method, url, headers, body, content_type, state, attempt_count, next_attempt_at, "
            "created_at, updated_at) "
            f"SELECT 900000000 + n, CASE WHEN {tiny} THEN {ids['tiny_account']} "
            f"WHEN {mine} THEN {ids['account']} ELSE {ids['other_account']} END, "
            f"CASE WHEN {tiny} THEN {ids['tiny_action']} WHEN {mine} AND {rare} THEN {ids['rare_action']} "
            f"WHEN {mine} THEN {ids['action']} END, "
            f"CASE WHEN {tiny} THEN {ids['tiny_automation']} WHEN {rare} THEN {ids['rare_automation']} "
            f"ELSE {ids['automation']} END, "
            f"{first} + ({_mod('n', CONTACTS)}), 'http://127.0.0.1:9', 'POST', 'http://127.0.0.1:9/hook', "
            f"'{{}}', {_blob(dialect)}, '{FORM}', {states}, 1, {now}, {now}, {now} "
            f"FROM ({_series(dialect, DELIVERIES * 7 // 6)}) AS s"
        )
        sql(
            "INSERT INTO delivery_attempts (delivery_id, account_id, number, started_at, duration_ms, "
            "status_code, response_headers, response_body, outcome) "
            f"SELECT id, account_id, 1, {_seconds_ago(dialect, _mod('id', 400_000))}, 1.0, 200, '{{}}', "
            f"{_blob(dialect)}, 'success' FROM deliveries"
        )
        sql(
            "INSERT INTO audit_log (at, account_id, actor_kind, actor_label, action, target_type, detail) "
            f"SELECT {now}, CASE WHEN {_mod('n', 600)} = 0 THEN {ids['tiny_account']} "
            f"ELSE {ids['account']} END, "
            "'cli', 'cli:seed', 'list.create', 'list', '{}' "
            f"FROM ({_series(dialect, CONTACTS)}) AS s"
        )
    _analyze(engine)


def _analyze(engine: sa.Engine) -> None:
    """Fresh statistics, and on PostgreSQL the visibility map autovacuum keeps (index-only scans)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")


def _seed_listener(engine: sa.Engine) -> None:
    """An inbox of INBOX syncs, a done projection run and a CRM run each (some pending or failed, with
    errors), BACKLOG failed runs of a handler that is down, the CRM's calls, and as many projected
    contacts with a field and a page visit each."""
    dialect = engine.dialect.name
    base_ms = int(time.time() * 1000) - 10 * INBOX
    with engine.begin() as conn:
        sql = conn.exec_driver_sql
        sql(
            "INSERT INTO listener_inbox (transactionid, received_at_ms, method, content_type, query, "
            "headers, body, source_address, deduplicable) "
            f"SELECT CAST(n AS TEXT), {base_ms} + 10 * n, 'POST', 'application/x-www-form-urlencoded', '', "
            f"'{{}}', {_blob(dialect)}, '127.0.0.1', TRUE FROM ({_series(dialect, INBOX)}) AS s"
        )
        crm_state = f"CASE {_mod('id', 1000)} WHEN 0 THEN 'failed' WHEN 1 THEN 'pending' ELSE 'done' END"
        crm_error = f"CASE WHEN {_mod('id', 1000)} < 2 THEN 'HTTP 500' ELSE NULL END"
        for handler, state, error in (("projection", "'done'", "NULL"), ("crm", crm_state, crm_error)):
            sql(
                "INSERT INTO listener_handler_runs (inbox_id, handler, state, attempts, next_attempt_at_ms, "
                "received_at_ms, finished_at_ms, last_error) "
                f"SELECT id, '{handler}', {state}, 1, received_at_ms, received_at_ms, received_at_ms, "
                f"{error} FROM listener_inbox"
            )
        sql(  # refused requests, one row per minute and key (listener/refusals.py)
            "INSERT INTO listener_refusals (minute_ms, reason, status, source_address, action, action_name, "
            "secret_label, count, last_at_ms) "
            f"SELECT {base_ms} + 60000 * CAST(n AS BIGINT), 'no_match', 401, '10.0.0.' || {_mod('n', 200)}, "
            f"CAST(n AS TEXT), 'automation · action ' || n, '', 3, {base_ms} + 60000 * CAST(n AS BIGINT) "
            f"FROM ({_series(dialect, INBOX)}) AS s"
        )
        # a handler whose endpoint has been down a while: a backlog of failures the admin page
        # lists newest first, a page at a time
        sql(
            "INSERT INTO listener_handler_runs (inbox_id, handler, state, attempts, next_attempt_at_ms, "
            "received_at_ms, finished_at_ms, last_error) "
            "SELECT id, 'down', 'failed', 5, received_at_ms, received_at_ms, NULL, 'HTTP 503' "
            f"FROM listener_inbox WHERE id <= {BACKLOG}"
        )
        sql(
            "INSERT INTO listener_handler_attempts (run_id, attempt, at_ms, ok, status, duration_ms, target, "
            "detail) SELECT id, 1, received_at_ms, TRUE, 200, 5, 'https://crm.example/contacts', '' "
            f"FROM listener_handler_runs WHERE handler = 'crm' AND {_mod('inbox_id', 10)} = 0"
        )
        sql(
            "INSERT INTO sync_contacts (contact_id, email, phone, last_transactionid, updated_at_ms) "
            f"SELECT CAST(n AS TEXT), 'c' || n || '@example.com', '+1555' || n, n, {base_ms} + n "
            f"FROM ({_series(dialect, INBOX)}) AS s"
        )
        sql(
            "INSERT INTO sync_field_values (contact_id, field_id, name, value) "
            "SELECT contact_id, '3', 'First Name', 'Jane' FROM sync_contacts"
        )
        for table, values in ACTIVITY_ROWS.items():
            names = ", ".join(values)
            sql(
                f"INSERT INTO {table} (contact_id, {names}, first_transactionid) "
                f"SELECT contact_id, {', '.join(values.values())}, last_transactionid FROM sync_contacts"
            )
    _analyze(engine)


ACTIVITY_ROWS = {
    "sync_campaigns_opened": {"campaign_id": "'7'", "name": "'Spring'", "open_date": "'2026-01-02'"},
    "sync_links_clicked": {"url_sha256": "'abc'", "url": "'https://example.com/x'", "clicks": "1"},
    "sync_pages_visited": {
        "page_sha256": "'abc'",
        "page": "'https://example.com/p'",
        "visit_date": "'2026-01-02'",
    },
    "sync_automations_triggered": {
        "automation_id": "'9'",
        "name": "'Welcome'",
        "trigger_date": "'2026-01-02'",
    },
    "sync_goals_reached": {"goal_id": "'3'", "name": "'Bought'", "reach_date": "'2026-01-02'"},
    "sync_webhooks_triggered": {"webhook_id": "'4'", "name": "'Hook'", "trigger_date": "'2026-01-02'"},
    "sync_lead_scores": {"score_id": "'5'", "name": "'Score'", "score": "'10'", "score_date": "'2026-01-02'"},
}
"""One row of each kind of activity per projected contact."""


class Capture:
    """The SELECTs run on the database at ``url`` while ``on`` (by any engine: the listener's admin UI
    opens its own)."""

    def __init__(self, url: sa.URL) -> None:
        self.url = url.render_as_string(hide_password=False)
        self.on = False
        self.seen: list[tuple[str, Any]] = []
        sa.event.listen(sa.Engine, "before_cursor_execute", self._record)

    def close(self) -> None:
        sa.event.remove(sa.Engine, "before_cursor_execute", self._record)

    def _record(
        self, conn: sa.Connection, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool
    ) -> None:
        if not self.on or many or conn.engine.url.render_as_string(hide_password=False) != self.url:
            return
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            self.seen.append((statement, parameters))

    def drain(self) -> list[tuple[str, Any]]:
        seen, self.seen = self.seen, []
        return seen


IN_KEY_ORDER = re.compile(r"ORDER BY (\w+)\.id(?: DESC| ASC)?\s+LIMIT ")
"""The first page of a list, or a capped count of a whole table (db/counting.py): SQLite reads the
table in rowid order with no filter and stops after LIMIT rows, though its plan says SCAN."""


def _scans(conn: sa.Connection, statement: str, parameters: Any) -> list[str]:
    """Full scans of tables that grow (PostgreSQL: ``Seq Scan`` nodes; SQLite: ``SCAN t`` lines)."""
    bounded: set[str] = set()
    driver = conn.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    if conn.dialect.name == "postgresql":
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        plan = cursor.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        found: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            name = node.get("Relation Name")
            if node.get("Node Type") == "Seq Scan" and name in BIG:
                found.append(f"Seq Scan on {name}")
            for child in node.get("Plans", []):
                walk(child)

        walk(plan[0]["Plan"])
        return found
    cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
    lines = cursor.fetchall()
    aliases = {
        alias: table for table, alias in re.findall(r"\b(\w+) AS (\w+)\b", statement) if table in TABLES
    }
    if " WHERE " not in statement and not any("TEMP B-TREE FOR ORDER BY" in row[3] for row in lines):
        bounded |= set(IN_KEY_ORDER.findall(statement))
    found = []
    for row in lines:
        scanned = re.fullmatch(r"SCAN (\w+)", row[3])
        if scanned is None:
            continue
        table = aliases.get(scanned.group(1), scanned.group(1))
        if table in TABLES and table not in SMALL and table not in bounded:
            found.append(f"SCAN {table}")
    return found


READ_AT_MOST = 2 * CAP
"""PostgreSQL: rows one plan node may read (scanned, filtered out or sorted), a capped count's worth
and a margin; a page that reads a list, a state or an inbox whole reads ten times more here."""
STEPS_AT_MOST = 400_000
"""SQLite: virtual machine steps one statement may take (a capped count takes about 140,000; reading
the seeded deliveries or a list's contacts whole, millions)."""


SEARCH_READ_AT_MOST = 2_000
SEARCH_STEPS_AT_MOST = 100_000
"""A contact search reads its matches, a page's worth per list searched (by email prefix and by
phone), and nothing else: it has no capped count to allow for (walking a list in email order to
meet a phone takes some 300,000 steps here)."""


def _work(
    conn: sa.Connection,
    statement: str,
    parameters: Any,
    *,
    read_at_most: int = READ_AT_MOST,
    steps_at_most: int = STEPS_AT_MOST,
) -> str | None:
    """What a statement reads, run for real, when it is more than a page's worth: a page must cost
    the same however big its tables, so it may read no more than the capped counts do."""
    driver = conn.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    if conn.dialect.name == "postgresql":
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
        plan = cursor.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        heavy: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            loops = node.get("Actual Loops", 1)
            read = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops
            if node.get("Node Type") == "Sort":
                read = sum(c.get("Actual Rows", 0) * c.get("Actual Loops", 1) for c in node.get("Plans", []))
            if read > read_at_most:
                where = node.get("Index Name") or node.get("Relation Name") or ""
                heavy.append(f"{node['Node Type']} {where} reads {read} rows")
            for child in node.get("Plans", []):
                walk(child)

        walk(plan[0]["Plan"])
        return "; ".join(heavy) or None
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1000
        return 0

    driver.set_progress_handler(tick, 1000)
    try:
        cursor.execute(statement, parameters)
        cursor.fetchall()
    finally:
        driver.set_progress_handler(None, 1000)
    return f"takes {steps} steps" if steps > steps_at_most else None


def _explain(
    engine: sa.Engine,
    label: str,
    seen: list[tuple[str, Any]],
    *,
    bounded: bool = True,
    search: bool = False,
) -> list[str]:
    """Each statement's full scans and, when it must be ``bounded``, reads beyond a page's worth (a
    ``search``: beyond its matches)."""
    problems = []
    limits = {"read_at_most": SEARCH_READ_AT_MOST, "steps_at_most": SEARCH_STEPS_AT_MOST} if search else {}
    with engine.connect() as conn:
        for statement, parameters in seen:
            found = _scans(conn, statement, parameters)
            heavy = _work(conn, statement, parameters, **limits) if bounded else None
            if heavy is not None:
                found.append(heavy)
            problems += [f"{label}: {problem}\n    {' '.join(statement.split())[:400]}" for problem in found]
    return problems


# --- the platform: API and admin UI ----------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, dict[str, int], Capture]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('plans') / 'p.db'}"
    else:
        url = request.getfixturevalue("pg_module_url")
    metrics_port = free_port()
    with api_client(
        url,
        admin_password=PASSWORD,
        admin_email=OPERATOR_EMAIL,
        session_secret="s",
        metrics_port=metrics_port,
    ) as api:
        lst = api.ok("POST", "/api/lists", 201, json={"name": "Big"})
        small = api.ok("POST", "/api/lists", 201, json={"name": "Small"})
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

            other_account = create_account(conn, name="B", now=utc_now())
            operator = create_key(conn, account_id=None, role="operator", name="op", now=utc_now()).key
        manual = {"list_id": lst["id"], "name": "Rare", "trigger": {"event": "manual"}}
        rare = api.ok("POST", "/api/automations", 201, json=manual)
        rare_action = api.ok(
            "POST", f"/api/automations/{rare['id']}/actions", 201, json={"url": "http://127.0.0.1:9/rare"}
        )
        person(api.engine, OWNER_EMAIL, account_id=api.account_id, role="owner")
        tiny = _tiny_account(api)
        ids = {
            **{f"tiny_{k}": v for k, v in tiny.items()},
            "rare_automation": rare["id"],
            "rare_action": rare_action["id"],
            "account": api.account_id,
            "other_account": other_account,
            "list": lst["id"],
            "small_list": small["id"],
            "field": field["id"],
            "automation": automation["id"],
            "action": action["id"],
            "contact": contact["contact"]["id"],
        }
        _seed(api, ids)
        with api.engine.begin() as conn:  # a finished manual run of each account (the run page)
            for prefix in ("", "tiny_"):
                run = sa.text(
                    "INSERT INTO manual_runs (account_id, automation_id, state, cursor_contact_id, total, "
                    "scanned, matched, enqueued, started_at, updated_at, finished_at) VALUES (:a, :u, "
                    "'completed', 0, 0, 0, 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) "
                    "RETURNING id"
                )
                params = {"a": ids[f"{prefix}account"], "u": ids[f"{prefix}automation"]}
                ids[f"{prefix}run"] = int(conn.execute(run, params).scalar_one())
        with api.engine.connect() as conn:
            ids["busy_contact"] = int(  # the first generated contact: it has activity and deliveries
                conn.execute(
                    sa.text("SELECT id FROM contacts WHERE list_id = :l AND email_key = 'c1@example.com'"),
                    {"l": ids["list"]},
                ).scalar_one()
            )
            ids["delivery"] = int(
                conn.execute(
                    sa.text("SELECT max(id) FROM deliveries WHERE account_id = :a"), {"a": api.account_id}
                ).scalar_one()
            )
            ids["endpoint"] = int(conn.execute(sa.text("SELECT min(id) FROM endpoints")).scalar_one() or 0)
        with api.engine.begin() as conn:  # its endpoint failing: the dashboard counts what waits for it
            failing = "UPDATE endpoints SET failing_since = CURRENT_TIMESTAMP WHERE account_id = :a"
            conn.execute(sa.text(failing), {"a": api.account_id})
            ids["tiny_delivery"] = int(
                conn.execute(
                    sa.text("SELECT max(id) FROM deliveries WHERE account_id = :a"),
                    {"a": ids["tiny_account"]},
                ).scalar_one()
            )
            ids["tiny_busy_contact"] = int(
                conn.execute(
                    sa.text("SELECT min(id) FROM contacts WHERE list_id = :l AND email_key LIKE 't%'"),
                    {"l": ids["tiny_list"]},
                ).scalar_one()
            )
        ids["operator_key"] = 0
        ids["metrics_port"] = metrics_port
        api.client.headers["x-operator"] = operator
        capture = Capture(api.engine.url)
        try:
            yield api, ids, capture
        finally:
            capture.close()


def _tiny_account(api: Api) -> dict[str, int]:
    """An account with a few rows among the others' many, and its owner: its pages must read its own
    rows only, never walk the big account's."""
    account, key = new_account(api.engine, "Tiny")
    person(api.engine, TINY_EMAIL, account_id=account, role="owner")
    with httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:

        def made(path: str, body: dict[str, Any]) -> Any:
            answer = client.post(path, json=body)
            assert answer.status_code == 201, answer.text
            return answer.json()

        lst = made("/api/lists", {"name": "Tiny"})
        automation = made(
            "/api/automations", {"list_id": lst["id"], "name": "T", "trigger": {"event": "manual"}}
        )
        action = made(f"/api/automations/{automation['id']}/actions", {"url": "http://127.0.0.1:9/tiny"})
        contact = made(f"/api/lists/{lst['id']}/contacts", {"email": "tiny@example.com"})
    return {
        "account": account,
        "list": lst["id"],
        "small_list": lst["id"],
        "automation": automation["id"],
        "rare_automation": automation["id"],
        "action": action["id"],
        "rare_action": action["id"],
        "contact": contact["contact"]["id"],
    }


LINEAR = {
    "/api/automations/{automation_id}/dry-run": "counts a whole list on request, as the manual run it "
    "previews walks it",
}
"""Reads that are linear in a list by design (not daily views); each says why."""
UNBOUNDED: dict[str, str] = {}
"""API reads known to read more than a page's worth (found by this test, still to fix): they must
use indexes, but are not held to a page's worth of rows yet."""
FILTERS = {
    "/api/deliveries": [
        {},
        {"state": "pending"},
        {"state": "failed"},
        {"contact_id": "{contact}"},
        {"automation_id": "{automation}"},
        {"action_id": "{action}"},
        {"action_id": "{rare_action}"},
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
        assert route.methods is not None, full
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
        capture.on = True
        try:
            response = api.client.get(path, params=query, headers=headers)
        finally:
            capture.on = False
        assert response.status_code in (200, 404), (path, query, response.text)
        seen = capture.drain()
        explained += sum("deliveries" in statement for statement, _ in seen)
        problems += _explain(api.engine, f"GET {path} {query}", seen, bounded=path not in UNBOUNDED)
    assert not problems, "\n".join(problems)
    assert explained >= 10, "the reads of the delivery views were not captured"


UI_LINEAR = {
    "/automations/{automation_id:int}/run": "the dry run a manual run starts from counts the whole list",
    "/automations/{automation_id:int}/resend": "the dry run a resend starts from counts the whole list",
}
"""Pages linear in a list by design (confirmations of a whole-list run), each with its reason."""
UI_IDS = {
    "run_id": "run",
    "contact_id": "busy_contact",
    "automation_id": "automation",
    "action_id": "action",
    "delivery_id": "delivery",
    "list_id": "list",
}
UI_QUERIES: dict[str, list[dict[str, str]]] = {
    "/contacts": [
        {},
        {"list": "{small_list}"},
        {"q": "c77@example.com"},
        {"q": "C12"},
        {"q": "s1"},
        {"q": "+15551234"},
        {"q": "nobody"},
        {"q": "c7", "list": "{list}"},
    ],
    "/deliveries": [
        {},
        *({"state": state} for state in ("pending", "in_flight", "delivered", "failed", "cancelled")),
        {"contact": "{busy_contact}"},
        {"automation": "{automation}"},
        {"automation": "{rare_automation}"},
        {"action": "{action}"},
        {"action": "{rare_action}"},
        {"state": "failed", "automation": "{automation}"},
        {"state": "retrying"},
        {"state": "retrying", "automation": "{rare_automation}"},
        {"state": "retrying", "action": "{action}"},
    ],
    "/automations/new": [{"list": "{list}"}],
    "/audit": [{}, {"action": "list."}, {"actor": "seed"}, {"target_type": "list", "since": "2020-01-01"}],
}
"""Each page's filters and searches (a page not named here is called as it is)."""
PAGER = re.compile(r'href="\?([^"]*)" id="(\w+)-(down|up|top)"')
AUDIT_OLDER = re.compile(r'href="\?([^"]*)" id="older"')


def _links(html: str) -> list[str]:
    """The query strings of a page's "older / newer / first" links."""
    found = [query for query, _name, _way in PAGER.findall(html)] + AUDIT_OLDER.findall(html)
    return [query.replace("&amp;", "&") for query in found]


def _visit(
    client: httpx.Client | Ui, capture: Capture, path: str, query: dict[str, str], *, depth: int = 2
) -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    """GET ``path?query`` and, ``depth`` links deep, the pages its pager links to: (label, statements)."""
    capture.on = True
    try:
        response = client.get(path, params=query)
    finally:
        capture.on = False
    assert response.status_code == 200, (path, query, response.text[-2000:])
    yield f"GET {path}?{urlencode(query)}", capture.drain()
    if depth:
        for link in _links(response.text):
            yield from _visit(client, capture, path, dict(parse_qsl(link)), depth=depth - 1)


def test_every_admin_page_reads_through_indexes(world: tuple[Api, dict[str, int], Capture]) -> None:
    """Every GET page, as the operator working in the big account and as the tiny account's owner."""
    api, ids, capture = world
    pages = [route for route in page_table(api.app) if "GET" in (route.methods or ())]
    tiny = {k.removeprefix("tiny_"): v for k, v in ids.items() if k.startswith("tiny_")}
    problems: list[str] = []
    visited = 0
    for email, where, operator in ((OPERATOR_EMAIL, ids, True), (TINY_EMAIL, tiny, False)):
        with closing(sign_in(api.base_url, email)) as ui:
            assert ui.post("/account/switch", {"account_id": where["account"]}).status_code == 303
            for route in sorted(pages, key=lambda r: r.path):
                if (route.role == OPERATOR and not operator) or route.path in UI_LINEAR:
                    continue
                params = re.findall(r"{(\w+)(?::\w+)?}", route.path)
                unknown = [p for p in params if p not in UI_IDS]
                assert not unknown, f"{route.path}: tell the plan test which seeded id {unknown} name"
                path = route.path
                for param in params:
                    path = re.sub(r"{" + param + r"(?::\w+)?}", str(where[UI_IDS[param]]), path)
                for query in UI_QUERIES.get(route.path, [{}]):
                    filled = {k: v.format(**where) for k, v in query.items()}
                    search = route.path == "/contacts" and "q" in filled
                    for label, seen in _visit(ui, capture, path, filled):
                        visited += 1
                        problems += _explain(api.engine, f"{email} {label}", seen, search=search)
    assert not problems, "\n".join(problems)
    assert visited >= 80, "the pages' newer / older links were not followed"


def test_a_metrics_scrape_reads_through_indexes(world: tuple[Api, dict[str, int], Capture]) -> None:
    """The gauges read at each scrape (queue depth by state, the longest wait, disabled endpoints)."""
    api, ids, capture = world
    capture.on = True
    try:
        scraped = httpx.get(f"http://127.0.0.1:{ids['metrics_port']}/metrics", timeout=60)
    finally:
        capture.on = False
    assert scraped.status_code == 200
    assert 'contactsync_deliveries_queue_depth{state="delivered"} 10001.0' in scraped.text  # capped
    seen = capture.drain()
    assert any("deliveries" in statement for statement, _ in seen), "the gauges were not read"
    problems = _explain(api.engine, "GET /metrics", seen)
    assert not problems, "\n".join(problems)


def test_recording_delivered_syncs_reads_through_indexes(world: tuple[Api, dict[str, int], Capture]) -> None:
    """A batch of the job that makes delivered syncs webhook activity (automation/sync_activity.py)
    picks the next delivered deliveries through (state, updated_at, id), whatever the outbox's size;
    rolled back, so the other tests see the world unchanged."""
    api, _ids, capture = world
    rt = Runtime.create(Settings(), engine=api.engine)
    capture.on = True
    try:
        with api.engine.connect() as conn:
            tx = conn.begin()
            try:
                done, more = record_batch(conn, rt, settled=utc_now() + timedelta(days=1))
            finally:
                tx.rollback()
    finally:
        capture.on = False
    assert more
    assert done.read == BATCH
    # the seeded deliveries of the other accounts name the big account's contacts: not theirs to record
    assert 0 < done.recorded < done.read
    seen = capture.drain()
    assert any("deliveries" in statement for statement, _ in seen)
    problems = _explain(api.engine, "sync activity batch", seen)
    assert not problems, "\n".join(problems)


# --- the listener's admin UI and metrics ------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def listener_world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, list[str], sa.Engine, Capture]]:
    """A listener with its admin UI over a seeded inbox (on PostgreSQL in a schema of its own, beside
    the platform's tables)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('listener-plans') / 'l.db'}"
    else:
        base = request.getfixturevalue("pg_module_url")
        admin = create_engine(base)
        with admin.begin() as conn:
            conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS listener")
        admin.dispose()
        url = base + "?options=-csearch_path%3Dlistener"
    upgrade(url, side="listener")
    engine = create_engine(url)
    _seed_listener(engine)
    from contactsync.servers import listener_server
    from contactsync.settings import Settings

    settings = Settings(
        listener_database_url=url,
        listener_token=TOKEN,
        listener_secret=SECRET,
        admin_password=PASSWORD,
        session_secret="s",
        listener_run_handlers=False,
        listener_projection=False,
    )
    capture = Capture(engine.url)
    app = listener_server(settings, handlers={})
    pages = sorted({route.path for route in page_table(app.inner) if "GET" in (route.methods or ())})
    try:
        with serve(app) as base_url:
            yield base_url, pages, engine, capture
    finally:
        capture.close()
        engine.dispose()


LISTENER_QUERIES: dict[str, list[dict[str, str]]] = {
    "/contacts": [{}, {"q": "77"}, {"q": "c77@example.com"}, {"q": "nobody"}],
}
LISTENER_IDS = {"transactionid": "777", "contact_id": "777"}


def test_every_listener_page_and_its_metrics_read_through_indexes(
    listener_world: tuple[str, list[str], sa.Engine, Capture],
) -> None:
    base, pages, engine, capture = listener_world
    assert "/handlers" in pages
    problems: list[str] = []
    with closing(listener_sign_in(base + "/admin", PASSWORD)) as admin:
        for page in pages:
            unknown = [p for p in re.findall(r"{(\w+)}", page) if p not in LISTENER_IDS]
            assert not unknown, f"{page}: tell the plan test which seeded key {unknown} name"
            path = re.sub(r"{(\w+)}", lambda m: LISTENER_IDS[m.group(1)], page)
            for query in LISTENER_QUERIES.get(page, [{}]):
                for label, seen in _visit(admin, capture, path, query):
                    problems += _explain(engine, label, seen)
        capture.on = True
        try:
            assert admin.get(f"{base}/sync/{TOKEN}/metrics").status_code == 200
        finally:
            capture.on = False
        seen = capture.drain()
        assert any("listener_handler_runs" in statement for statement, _ in seen), "the backlog was not read"
        problems += _explain(engine, "GET /metrics", seen)
    assert not problems, "\n".join(problems)


def test_the_send_time_render_job_reads_through_its_index(world: tuple[Api, dict[str, int], Capture]) -> None:
    """The job rendering delayed deliveries (automation/send_time.py) runs in every dispatcher: its pick
    is one range of the partial index of rows still to render, whatever the size of the outbox, with
    thousands waiting for a delay that ends later among the seeded deliveries."""
    from contactsync.automation.runtime import Runtime, utc_now
    from contactsync.automation.send_time import render_due
    from contactsync.settings import Settings

    api, _ids, capture = world
    engine = api.engine
    now = utc_now()
    mark = (
        "UPDATE deliveries SET render_pending = TRUE, next_attempt_at = :at WHERE id IN "
        "(SELECT id FROM deliveries WHERE state = 'pending' ORDER BY id DESC LIMIT {n})"
    )
    with engine.begin() as conn:
        conn.execute(sa.text(mark.format(n=5000)), {"at": now.replace(year=now.year + 1)})
        conn.execute(sa.text(mark.format(n=50)), {"at": now})  # the newest 50 of them are due now
    _analyze(engine)
    runtime = Runtime.create(Settings(database_url=engine.url.render_as_string(hide_password=False)))
    try:
        with engine.connect() as conn:
            capture.on = True
            try:
                with conn.begin() as tx:
                    done = render_due(conn, runtime, now=now, limit=20)
                    tx.rollback()
            finally:
                capture.on = False
        assert done.total == 20
        seen = capture.drain()
        assert any("render_pending" in statement for statement, _ in seen)
        problems = _explain(engine, "render job", seen)
        assert not problems, "\n".join(problems)
    finally:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE deliveries SET render_pending = NULL WHERE render_pending IS NOT NULL")
            )
        _analyze(engine)
