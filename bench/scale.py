"""Scale: every daily page and list call over HTTP at three data sizes, and how much it grows.

For each database (SQLite, PostgreSQL) and each size ``contacts:deliveries`` a fresh database is
migrated (``contactsync.db.migrate``) and filled in SQL (``generate_series`` on PostgreSQL, recursive
CTEs on SQLite: minutes, not hours): one big account (a main list with a City field and its values,
a newsletter list, one activity per contact, deliveries across every state with an attempt each,
spread over 60 days, endpoint events, audit rows), three small accounts beside it, and a listener
inbox of as many syncs as deliveries with a CRM handler run each and the projected contacts. History
(delivered, cancelled and failed deliveries, done handler runs) grows with the size; what waits now
(a few hundred deliveries in flight, a few thousand pending, a handler's backlog) does not, as in
production, where it follows current traffic rather than history. Then
the real servers run as processes on 127.0.0.1 (``contactsync serve`` with its admin UI and metrics
port, ``contactsync listen`` with its admin UI) and every call of the scale issue's table is timed:
the API's ``/api/deliveries`` with its filters and ``/api/endpoints``, the UI's dashboard, contact
page, contacts list (first page, a deep page reached through its "older" links, searches),
automations, lists, deliveries (deep page, ``state=in_flight``), the listener's admin pages and
metrics, and the platform's ``/metrics``. All sizes of a database are built first and their servers run
side by side; each figure is the median of ``--repeat`` rounds (after a warm-up round) that call every
page at every size in turn, so load on a shared machine weighs on every size alike.

Prints, per database, ms per size and each call's growth ratio largest / smallest size (flagged
``!`` above 1.5: such a call reads more as data grows); then the manual-run throughput (contacts
scanned per second by ``contactsync.automation.manual`` over the whole main list, ~1 % matching)
and the retention throughput (rows per second deleted by ``db/retention.prune`` with a clock set
so that a slice of the oldest deliveries and inbox rows has outlived its horizon).

The no-argument run (``make bench``) is small: S = 20k, L = 100k, XL = 400k contacts. The issue's
sizes (S = 100k / 100k, L = 1M / 1M, XL = 5M / 2M contacts / deliveries; about an hour on two
cores)::

    python bench/scale.py --sizes 100000:100000,1000000:1000000,5000000:2000000 --db both
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("CONTACTSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DEFAULT_SIZES = "20000:20000,100000:100000,400000:200000"
PASSWORD = "a bench password long enough"
OPERATOR = "operator@example.com"
TOKEN = "t0k3n-" + "b" * 40
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPAN_S = 60 * 86400
"""Deliveries, attempts, activities and inbox rows are spread over the last 60 days."""
SMALL_ACCOUNTS = 3
IN_FLIGHT = 200
PENDING = 5000
"""Deliveries in flight and pending (of the newest ten times as many), whatever the history."""
FAILED_RUNS = 100
"""Failed handler runs in the listener's inbox, whatever its size."""
SMALL_LIST = 1000
"""Contacts of each small account (at most a hundredth of the total)."""
GROWTH_LIMIT = 1.5
PAGER = re.compile(r'href="\?([^"]*)" id="(\w+)-down"')
"""A keyset list's "older" link (web/paging.py)."""
DEEP_HOPS = 10
"""Older links followed to reach a deep page of a list."""


# --- SQL generation -------------------------------------------------------------------------------


def _series(dialect: str, n: int) -> str:
    if dialect == "postgresql":
        return f"SELECT g AS n FROM generate_series(CAST(1 AS BIGINT), {n}) AS g"
    return f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) SELECT n FROM s"


def _mod(column: str, m: int) -> str:
    """``column`` modulo ``m`` without ``%`` (a DBAPI placeholder)."""
    return f"({column} - ({column} / {m}) * {m})"


def _blob(dialect: str) -> str:
    return "decode('', 'hex')" if dialect == "postgresql" else "X''"


def _ago(dialect: str, now: datetime, seconds: str) -> str:
    """The timestamp ``seconds`` (an SQL integer expression) before ``now``."""
    stamp = now.strftime("%Y-%m-%d %H:%M:%S")
    if dialect == "postgresql":
        return f"(TIMESTAMP '{stamp}' - ({seconds}) * INTERVAL '1 second')"
    return f"(strftime('%Y-%m-%d %H:%M:%S', '{stamp}', '-' || ({seconds}) || ' seconds') || '.000000')"


@dataclass
class World:
    """What a generated database holds: the ids the timed calls need."""

    contacts: int
    deliveries: int
    account: int = 0
    main_list: int = 0
    news_list: int = 0
    city_field: int = 0
    automation: int = 0
    rare_automation: int = 0
    rare_action: int = 0
    manual_automation: int = 0
    busy_contact: int = 0
    key: str = ""
    secrets_key: str = ""
    extra: dict[str, int] = field(default_factory=dict)


def _runtime(engine: sa.Engine, world: World, **kw: Any) -> Any:
    """The servers' runtime (their secrets key: the actions' secrets are sealed with it)."""
    from contactsync.automation.runtime import Runtime
    from contactsync.settings import Settings

    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False), secrets_key=world.secrets_key
    )
    return Runtime.create(settings, engine=engine, **kw)


def _objects(engine: sa.Engine, world: World, now: datetime) -> dict[str, int]:
    """Accounts, lists, fields, automations and actions through the real code (few rows)."""
    from contactsync.automation import actions as act
    from contactsync.automation import automations, lists
    from contactsync.automation.action_settings import SyncActionSettings
    from contactsync.automation.rules import Group, Reentry, TriggerSpec
    from contactsync.tenancy.keys import create_key

    rt = _runtime(engine, world, clock=lambda: now)

    def automation(
        conn: sa.Connection, list_id: int, name: str, conditions: dict[str, Any]
    ) -> tuple[int, int]:
        auto = automations.create_automation(
            conn,
            rt,
            automations.AutomationIn(
                list_id=list_id,
                name=name,
                trigger=TriggerSpec(event="manual"),
                conditions=Group.model_validate(conditions),
                reentry=Reentry(policy="once"),
            ),
        )
        settings = SyncActionSettings(url=f"http://127.0.0.1:9/{name.lower()}?email=[#LOWER EMAIL#]")
        return auto.id, act.create_action(conn, rt, automation_id=auto.id, settings=settings).id

    everyone: dict[str, Any] = {"op": "and", "conditions": []}
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        world.account = lists.create_account(conn, name="Big", now=now)
        world.key = create_key(conn, account_id=world.account, name="bench", role="owner", now=now).key
        world.main_list = lists.create_list(
            conn, lists.ListIn(account_id=world.account, name="Main"), now=now
        ).id
        world.news_list = lists.create_list(
            conn, lists.ListIn(account_id=world.account, name="Newsletter"), now=now
        ).id
        world.city_field = lists.create_field(
            conn, lists.FieldIn(list_id=world.main_list, name="City"), now=now
        ).id
        lists.create_field(conn, lists.FieldIn(list_id=world.main_list, name="Plan"), now=now)
        world.automation, ids["action"] = automation(conn, world.main_list, "Sync", everyone)
        world.rare_automation, world.rare_action = automation(conn, world.main_list, "Rare", everyone)
        brest = {
            "op": "and",
            "conditions": [
                {"type": "field", "subject": f"field:{world.city_field}", "op": "eq", "value": "Brest"}
            ],
        }
        world.manual_automation, _ = automation(conn, world.main_list, "Brest", brest)
        for i in range(SMALL_ACCOUNTS):
            account = lists.create_account(conn, name=f"Small {i + 1}", now=now)
            ids[f"small_account{i}"] = account
            ids[f"small_list{i}"] = lists.create_list(
                conn, lists.ListIn(account_id=account, name=f"Small {i + 1}"), now=now
            ).id
            ids[f"small_automation{i}"], ids[f"small_action{i}"] = automation(
                conn, ids[f"small_list{i}"], f"Small{i + 1}", everyone
            )
    return ids


def build_platform(url: str, world: World) -> None:
    """Migrate and fill the platform database at ``url``."""
    from contactsync.db import create_engine
    from contactsync.db.migrate import upgrade

    upgrade(url)
    engine = create_engine(url)
    dialect = engine.dialect.name
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    ids = _objects(engine, world, now)
    n_news = world.contacts // 10
    n_small = min(SMALL_LIST, world.contacts // 100)
    n_main = world.contacts - n_news - SMALL_ACCOUNTS * n_small
    d_total = world.deliveries
    stamp = (
        f"TIMESTAMP '{now:%Y-%m-%d %H:%M:%S}'"
        if dialect == "postgresql"
        else f"'{now:%Y-%m-%d %H:%M:%S}.000000'"
    )
    with engine.begin() as conn:
        sql = conn.exec_driver_sql
        contact_lists = [(world.main_list, n_main, "c"), (world.news_list, n_news, "n")]
        contact_lists += [(ids[f"small_list{i}"], n_small, f"s{i}-") for i in range(SMALL_ACCOUNTS)]
        for list_id, count, tag in contact_lists:
            sql(
                "INSERT INTO contacts (list_id, email, email_key, phone, status, lead_score, created_at, "
                "updated_at) "
                f"SELECT {list_id}, '{tag}' || n || '@example.com', '{tag}' || n || '@example.com', "
                f"'+1555' || n, 'subscribed', {_mod('n', 100)}, {stamp}, {stamp} "
                f"FROM ({_series(dialect, count)}) AS s"
            )
        first = int(
            conn.execute(
                sa.text("SELECT min(id) FROM contacts WHERE list_id = :l"), {"l": world.main_list}
            ).scalar_one()
        )
        world.busy_contact = first
        # one City per main contact, 1 % of them in Brest (the manual run's match)
        sql(
            "INSERT INTO field_values (contact_id, field_id, value) "
            f"SELECT id, {world.city_field}, CASE WHEN {_mod('id', 100)} = 0 THEN 'Brest' ELSE 'Paris' END "
            f"FROM contacts WHERE list_id = {world.main_list}"
        )
        sql(
            "INSERT INTO activities (contact_id, kind, ref_id, name, url, occurred_at) "
            f"SELECT id, CASE WHEN {_mod('id', 2)} = 0 THEN 'campaign_open' ELSE 'page_visit' END, 3, "
            "'May', '/p', "
            f"{_ago(dialect, now, _mod('id * 7919', SPAN_S))} FROM contacts WHERE list_id = {world.main_list}"
        )
        # deliveries over 60 days, oldest first: one in seven is a small account's, one in a
        # thousand of the big account's goes to a rarely used automation
        small = f"{_mod('n', 7)} = 0"
        rare = f"{_mod('n', 1000)} = 5"
        # history (delivered, cancelled, failed) grows with the data; what waits now does not: the
        # newest ones are in flight (a few hundred) or pending (a few thousand, a failing endpoint's)
        newest = f"n > {d_total - IN_FLIGHT * 10}"
        waiting = f"n > {d_total - PENDING * 10}"
        states = (
            f"CASE WHEN {newest} AND {_mod('n', 10)} = 2 THEN 'in_flight' "
            f"WHEN {waiting} AND {_mod('n', 10)} = 1 THEN 'pending' ELSE CASE {_mod('n', 10)} "
            "WHEN 0 THEN 'failed' WHEN 3 THEN 'cancelled' ELSE 'delivered' END END"
        )
        created = _ago(dialect, now, f"(({d_total} - n) * {SPAN_S}) / {d_total}")
        sql(
            "INSERT INTO deliveries (transactionid, account_id, action_id, automation_id, contact_id, "
            "endpoint, method, url, headers, body, content_type, state, attempt_count, next_attempt_at, "
            "created_at, updated_at, last_status) "
            f"SELECT 900000000000 + n, "
            f"CASE WHEN {small} THEN {ids['small_account0']} ELSE {world.account} END, "
            f"CASE WHEN {small} THEN {ids['small_action0']} WHEN {rare} THEN {world.rare_action} "
            f"ELSE {ids['action']} END, "
            f"CASE WHEN {small} THEN {ids['small_automation0']} WHEN {rare} THEN {world.rare_automation} "
            f"ELSE {world.automation} END, "
            f"CASE WHEN {small} THEN NULL ELSE {first} + {_mod('n', n_main)} END, "
            "'http://127.0.0.1:9', 'POST', 'http://127.0.0.1:9/sync?email=c1@example.com', '{}', "
            f"{_blob(dialect)}, 'application/x-www-form-urlencoded', {states}, 1, {created}, {created}, "
            f"{created}, 200 FROM ({_series(dialect, d_total)}) AS s"
        )
        sql(
            "INSERT INTO delivery_attempts (delivery_id, account_id, number, started_at, duration_ms, "
            "status_code, response_headers, response_body, outcome) "
            f"SELECT id, account_id, 1, created_at, 12.5, 200, '{{}}', "
            f"{_blob(dialect)}, 'success' FROM deliveries"
        )
        for account in (world.account, *(ids[f"small_account{i}"] for i in range(SMALL_ACCOUNTS))):
            sql(
                "INSERT INTO endpoint_events (account_id, endpoint, kind, message, created_at) "
                f"SELECT {account}, 'http://127.0.0.1:9', 'failing', 'HTTP 503', "
                f"{_ago(dialect, now, 'n * 3600')} "
                f"FROM ({_series(dialect, 200)}) AS s"
            )
        # the big account's endpoint is failing: the dashboard and /api/endpoints count what waits for it
        sql(
            f"UPDATE endpoints SET failing_since = {stamp}, last_failure_at = {stamp} "
            f"WHERE account_id = {world.account}"
        )
        sql(
            "INSERT INTO audit_log (at, account_id, actor_kind, actor_label, action, target_type, detail) "
            f"SELECT {_ago(dialect, now, f'({world.contacts // 10} - n) * 60')}, {world.account}, 'cli', "
            f"'cli:seed', 'contact.update', 'contact', '{{}}' "
            f"FROM ({_series(dialect, world.contacts // 10)}) AS s"
        )
    world.extra = ids
    _analyze(engine)
    engine.dispose()


def build_listener(url: str, world: World) -> None:
    """Migrate and fill the listener database at ``url``: as many syncs as deliveries."""
    from contactsync.db import create_engine
    from contactsync.db.migrate import upgrade

    upgrade(url, side="listener")
    engine = create_engine(url)
    dialect = engine.dialect.name
    n = world.deliveries
    base_ms = int(time.time() * 1000) - SPAN_S * 1000
    step_ms = SPAN_S * 1000 // n
    with engine.begin() as conn:
        sql = conn.exec_driver_sql
        sql(
            "INSERT INTO listener_inbox (transactionid, received_at_ms, method, content_type, query, "
            "headers, body, source_address, deduplicable) "
            f"SELECT CAST(900000000000 + n AS TEXT), {base_ms} + {step_ms} * n, 'POST', "
            f"'application/x-www-form-urlencoded', '', '{{}}', {_blob(dialect)}, '127.0.0.1', TRUE "
            f"FROM ({_series(dialect, n)}) AS s"
        )
        # a handler's backlog (the newest syncs still pending, a few failures) does not grow with history
        state = (
            f"CASE WHEN id > {n - PENDING} AND {_mod('id', 10)} = 1 THEN 'pending' "
            f"WHEN id <= {FAILED_RUNS * 1000} AND {_mod('id', 1000)} = 0 THEN 'failed' ELSE 'done' END"
        )
        error = f"CASE WHEN ({state}) = 'done' THEN NULL ELSE 'HTTP 500' END"
        sql(
            "INSERT INTO listener_handler_runs (inbox_id, handler, state, attempts, next_attempt_at_ms, "
            "received_at_ms, finished_at_ms, last_error) "
            f"SELECT id, 'crm', {state}, 1, received_at_ms, received_at_ms, received_at_ms, {error} "
            "FROM listener_inbox"
        )
        sql(
            "INSERT INTO sync_contacts (contact_id, email, phone, last_transactionid, updated_at_ms) "
            f"SELECT CAST(n AS TEXT), 'c' || n || '@example.com', '+1555' || n, 900000000000 + n, "
            f"{base_ms} + {step_ms} * n FROM ({_series(dialect, min(n, world.contacts))}) AS s"
        )
        sql(
            "INSERT INTO sync_field_values (contact_id, field_id, name, value) "
            "SELECT contact_id, '3', 'City', 'Paris' FROM sync_contacts"
        )
    _analyze(engine)
    engine.dispose()


def _analyze(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")


# --- databases and servers ------------------------------------------------------------------------


@contextlib.contextmanager
def databases(kind: str, tmp: Path) -> Iterator[tuple[str, str]]:
    """Empty platform and listener databases of ``kind``: their URLs (dropped afterwards)."""
    if kind == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="scale-", dir=tmp))
        try:
            yield f"sqlite:///{directory / 'platform.db'}", f"sqlite:///{directory / 'listener.db'}"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    import psycopg

    names = [f"bench_scale_{uuid.uuid4().hex[:8]}", f"bench_scale_l_{uuid.uuid4().hex[:8]}"]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _process(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{command[3:5]} did not start:\n{log.read_text()[-3000:]}"
                        ) from None
                    time.sleep(0.1)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


KEEP_EVERYTHING = {
    f"CONTACTSYNC_RETENTION_{kind}_DAYS": "0"
    for kind in ("DELIVERED", "FAILED", "ENDPOINT_EVENTS", "ENTRIES", "RUNS", "AUDIT", "ACTIVITIES", "INBOX")
}
"""The servers must not prune what is being measured."""


@contextlib.contextmanager
def servers(platform_url: str, listener_url: str, tmp: Path, world: World) -> Iterator[dict[str, str]]:
    """``contactsync serve`` (API, admin UI, metrics port) and ``contactsync listen`` (admin UI)."""
    env = {
        **os.environ,
        **KEEP_EVERYTHING,
        "CONTACTSYNC_DATABASE_URL": platform_url,
        "CONTACTSYNC_ADMIN_PASSWORD": PASSWORD,
        "CONTACTSYNC_ADMIN_EMAIL": OPERATOR,
        "CONTACTSYNC_SESSION_SECRET": "bench-session-secret",
        "CONTACTSYNC_SECRETS_KEY": world.secrets_key,
        "CONTACTSYNC_LISTENER_DATABASE_URL": listener_url,
        "CONTACTSYNC_LISTENER_TOKEN": TOKEN,
        "CONTACTSYNC_LISTENER_SECRET": SECRET,
        "CONTACTSYNC_LISTENER_RUN_HANDLERS": "false",
        "CONTACTSYNC_LISTENER_PROJECTION": "false",
    }
    api, metrics, listener = _free_port(), _free_port(), _free_port()
    cli = [sys.executable, "-m", "contactsync"]
    platform = [*cli, "serve", "--port", str(api), "--metrics-port", str(metrics), "--log-level", "warning"]
    listen = [*cli, "listen", "--port", str(listener), "--token-file", str(tmp / "token")]
    with (
        _process(platform, env, api, tmp / "serve.log"),
        _process(listen, env, listener, tmp / "listen.log"),
    ):
        yield {
            "api": f"http://127.0.0.1:{api}",
            "metrics": f"http://127.0.0.1:{metrics}",
            "listener": f"http://127.0.0.1:{listener}",
        }


# --- timing ---------------------------------------------------------------------------------------


def _csrf(html: str) -> str:
    found = re.search(r'data-csrf="([^"]*)"', html) or re.search(r'name="csrf_token" value="([^"]+)"', html)
    if found is None:
        raise RuntimeError(f"no CSRF token in {html[:300]}")
    return found.group(1)


def _platform_ui(base: str, account: int) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=300)
    form = client.get("/login")
    done = client.post(
        "/login", data={"csrf_token": _csrf(form.text), "email": OPERATOR, "password": PASSWORD, "next": "/"}
    )
    if done.status_code != 303:
        raise RuntimeError(f"sign-in failed: {done.status_code} {done.text[:500]}")
    csrf = _csrf(client.get("/me/password").text)
    switched = client.post("/account/switch", data={"csrf_token": csrf, "account_id": account})
    if switched.status_code != 303:
        raise RuntimeError(f"account switch failed: {switched.status_code}")
    return client


def _listener_ui(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base + "/admin", timeout=300)
    form = client.get("/login")
    done = client.post("/login", data={"csrf_token": _csrf(form.text), "password": PASSWORD, "next": ""})
    if done.status_code != 303:
        raise RuntimeError(f"listener sign-in failed: {done.status_code}")
    return client


def _deep(client: httpx.Client, path: str, params: dict[str, str]) -> dict[str, str]:
    """The query of the page DEEP_HOPS "older" links below ``path?params`` (as deep as the list goes)."""
    hops = 0
    while hops < DEEP_HOPS:
        found = PAGER.search(client.get(path, params=params).text)
        if found is None:
            break
        params = dict(parse_qsl(found.group(1).replace("&amp;", "&")))
        hops += 1
    print(f"    {path}: {hops} older links followed to {params}", flush=True)
    return params


Call = tuple[str, httpx.Client, str, dict[str, str]]


def calls(urls: dict[str, str], world: World) -> tuple[list[Call], list[httpx.Client]]:
    """(label, client, path, query) of every timed call."""
    api = httpx.Client(base_url=urls["api"], headers={"Authorization": f"Bearer {world.key}"}, timeout=300)
    ui = _platform_ui(urls["api"], world.account)
    lui = _listener_ui(urls["listener"])
    plain = httpx.Client(timeout=300)
    busy, rare = str(world.busy_contact), str(world.rare_automation)
    found: list[Call] = [
        ("API deliveries", api, "/api/deliveries", {}),
        ("API deliveries state=pending", api, "/api/deliveries", {"state": "pending"}),
        ("API deliveries state=failed", api, "/api/deliveries", {"state": "failed"}),
        ("API deliveries contact_id", api, "/api/deliveries", {"contact_id": busy}),
        ("API deliveries automation_id (rare)", api, "/api/deliveries", {"automation_id": rare}),
        ("API deliveries action_id (rare)", api, "/api/deliveries", {"action_id": str(world.rare_action)}),
        ("API endpoints", api, "/api/endpoints", {}),
        ("UI dashboard", ui, "/", {}),
        ("UI contact page", ui, f"/contacts/{busy}", {}),
        ("UI contacts", ui, "/contacts", {}),
        ("UI contacts deep page", ui, "/contacts", _deep(ui, "/contacts", {})),
        ("UI contact search exact email", ui, "/contacts", {"q": "c77@example.com"}),
        ("UI contact search prefix", ui, "/contacts", {"q": "c12"}),
        ("UI contact search phone", ui, "/contacts", {"q": "+15551234"}),
        ("UI automations", ui, "/automations", {}),
        ("UI automation page", ui, f"/automations/{world.automation}", {}),
        ("UI lists", ui, "/lists", {}),
        ("UI deliveries", ui, "/deliveries", {}),
        ("UI deliveries deep page", ui, "/deliveries", _deep(ui, "/deliveries", {})),
        ("UI deliveries state=in_flight", ui, "/deliveries", {"state": "in_flight"}),
        ("UI deliveries rare automation", ui, "/deliveries", {"automation": rare}),
        ("UI endpoints", ui, "/endpoints", {}),
        ("listener admin page", lui, "/", {}),
        ("listener handlers", lui, "/handlers", {}),
        ("listener contacts", lui, "/contacts", {}),
        ("listener contacts deep page", lui, "/contacts", _deep(lui, "/contacts", {})),
        ("listener contact search", lui, "/contacts", {"q": "77"}),
        ("listener metrics", plain, f"{urls['listener']}/sync/{TOKEN}/metrics", {}),
        ("platform /metrics", plain, f"{urls['metrics']}/metrics", {}),
    ]
    return found, [api, ui, lui, plain]


def time_calls(sites: list[tuple[dict[str, str], World]], repeat: int) -> list[dict[str, float]]:
    """Median ms of each call at each size, over ``repeat`` rounds after a warm-up round. A round
    calls every page once at every size, one size right after the other: load on the shared machine
    then weighs on all sizes alike (and on every call alike), so the growth ratios compare like with
    like even when the absolute figures move."""
    prepared = [calls(urls, world) for urls, world in sites]
    samples: list[dict[str, list[float]]] = [{label: [] for label, *_ in found} for found, _ in prepared]
    try:
        for round_number in range(repeat + 1):
            for i in range(len(prepared[0][0])):
                for (found, _), got in zip(prepared, samples, strict=True):
                    label, client, path, params = found[i]
                    started = time.perf_counter()
                    response = client.get(path, params=params)
                    elapsed = (time.perf_counter() - started) * 1000
                    if response.status_code != 200:
                        raise RuntimeError(f"{label}: {response.status_code} {response.text[:500]}")
                    if round_number:
                        got[label].append(elapsed)
    finally:
        for _, clients in prepared:
            for client in clients:
                client.close()
    return [{label: statistics.median(values) for label, values in got.items()} for got in samples]


# --- manual runs and retention --------------------------------------------------------------------


def manual_throughput(url: str, world: World) -> tuple[float, int, int]:
    """Contacts scanned per second by a whole-list manual run (the real code path); scanned, matched."""
    from contactsync.automation import manual
    from contactsync.db import create_engine

    engine = create_engine(url)
    rt = _runtime(engine, world)
    started = time.perf_counter()
    with engine.begin() as conn:
        run = manual.start_run(conn, rt, world.manual_automation)
    done = manual.run_to_completion(engine, rt, run.id)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return done.scanned / elapsed, done.scanned, done.matched


def retention_throughput(platform_url: str, listener_url: str, world: World) -> tuple[float, int, float, int]:
    """Rows per second deleted by one prune pass, with a clock set so that about a tenth of the
    deliveries (with their attempts) and of the inbox (with its handler runs) has outlived its horizon."""
    from contactsync.db import create_engine
    from contactsync.db import platform as pdb
    from contactsync.db.retention import Retention, prune

    keep = dict.fromkeys(Retention.__dataclass_fields__, 0.0)
    slice_rows = max(1000, world.deliveries // 10)
    engine = create_engine(platform_url)
    with engine.connect() as conn:
        d = pdb.deliveries.c
        picked = sa.select(d.updated_at).where(d.state == "delivered").order_by(d.updated_at, d.id)
        oldest = conn.execute(picked.limit(1).offset(int(slice_rows * 0.6))).scalar_one()
    started = time.perf_counter()
    report = prune(
        engine,
        Retention(**{**keep, "delivered_days": 30.0}),
        side="platform",
        now=oldest + timedelta(days=30),
        pause_s=0,
    )
    platform_rate = report.total / (time.perf_counter() - started)
    engine.dispose()
    engine = create_engine(listener_url)
    with engine.connect() as conn:
        received = conn.execute(
            sa.text("SELECT received_at_ms FROM listener_inbox ORDER BY id LIMIT 1 OFFSET :k"),
            {"k": slice_rows},
        ).scalar_one()
    started = time.perf_counter()
    inbox = prune(
        engine,
        Retention(**{**keep, "inbox_days": 14.0}),
        side="listener",
        now=datetime(1970, 1, 1) + timedelta(milliseconds=received, days=14),
        pause_s=0,
    )
    listener_rate = inbox.total / (time.perf_counter() - started)
    engine.dispose()
    return platform_rate, report.total, listener_rate, inbox.total


# --- main -----------------------------------------------------------------------------------------


@dataclass
class Measured:
    timings: dict[str, float]
    manual: tuple[float, int, int]
    retention: tuple[float, int, float, int]
    build_s: float


def measure(kind: str, sizes: list[tuple[int, int]], args: argparse.Namespace, tmp: Path) -> list[Measured]:
    """Every size of ``kind`` built, its servers started side by side and timed together; then each
    size's manual run and retention pass, one after the other (servers stopped)."""
    from contactsync.db.sealing import generate_key

    worlds = [World(contacts=c, deliveries=d, secrets_key=generate_key()) for c, d in sizes]
    with contextlib.ExitStack() as stack:
        urls: list[tuple[str, str]] = []
        built: list[float] = []
        for world in worlds:
            platform_url, listener_url = stack.enter_context(databases(kind, tmp))
            started = time.perf_counter()
            build_platform(platform_url, world)
            build_listener(listener_url, world)
            built.append(time.perf_counter() - started)
            print(
                f"  {kind} {world.contacts:,} / {world.deliveries:,}: generated in {built[-1]:.0f} s",
                flush=True,
            )
            urls.append((platform_url, listener_url))
        with contextlib.ExitStack() as running:
            sites = []
            for (platform_url, listener_url), world in zip(urls, worlds, strict=True):
                directory = Path(tempfile.mkdtemp(prefix="servers-", dir=tmp))
                sites.append(
                    (running.enter_context(servers(platform_url, listener_url, directory, world)), world)
                )
            timings = time_calls(sites, args.repeat)
        results = []
        for (platform_url, listener_url), world, times, build_s in zip(
            urls, worlds, timings, built, strict=True
        ):
            manual = manual_throughput(platform_url, world)
            retention = retention_throughput(platform_url, listener_url, world)
            results.append(Measured(times, manual, retention, build_s))
    return results


def _label(contacts: int, deliveries: int) -> str:
    def short(n: int) -> str:
        return f"{n / 1_000_000:g}M" if n >= 1_000_000 else f"{n / 1000:g}k"

    return f"{short(contacts)}/{short(deliveries)}"


def report(kind: str, sizes: list[tuple[int, int]], results: list[Measured], repeat: int) -> list[str]:
    """The table of one database; returns the calls that grew beyond the limit."""
    heads = [_label(*s) for s in sizes]
    width = max(len(label) for label in results[0].timings) + 2
    print(f"\n{kind}: ms per call (median of {repeat}), growth = {heads[-1]} / {heads[0]}")
    print(f"{'call':<{width}}" + "".join(f"{h:>12}" for h in heads) + f"{'growth':>9}")
    grew = []
    for label in results[0].timings:
        values = [r.timings[label] for r in results]
        ratio = values[-1] / values[0]
        flag = " !" if ratio > GROWTH_LIMIT else ""
        if flag:
            grew.append(label)
        print(f"{label:<{width}}" + "".join(f"{v:12.1f}" for v in values) + f"{ratio:9.2f}{flag}")
    for size, r in zip(heads, results, strict=True):
        rate, scanned, matched = r.manual
        p_rate, p_rows, l_rate, l_rows = r.retention
        print(
            f"{size:>10}: manual run {rate:,.0f} contacts/s ({scanned:,} scanned, {matched:,} matched); "
            f"retention {p_rate:,.0f} deliveries/s ({p_rows:,}), {l_rate:,.0f} inbox rows/s ({l_rows:,}); "
            f"generated in {r.build_s:.0f} s"
        )
    growth = max(results[-1].timings[k] / results[0].timings[k] for k in results[0].timings)
    print(f"{kind}_max_growth={growth:.2f}")
    return grew


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="contacts:deliveries,… smallest first")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per page (the median counts)")
    args = parser.parse_args()
    sizes = [(int(c), int(d)) for c, d in (s.split(":") for s in args.sizes.split(","))]
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    grew: dict[str, list[str]] = {}
    try:
        for kind in kinds:
            grew[kind] = report(kind, sizes, measure(kind, sizes, args, tmp), args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for kind, labels in grew.items():
        print(
            f"{kind}: {len(labels)} call(s) grew more than {GROWTH_LIMIT}x"
            + (f": {', '.join(labels)}" if labels else "")
        )


if __name__ == "__main__":
    main()
