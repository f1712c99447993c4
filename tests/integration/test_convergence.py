"""Convergence: the projection is a function of the set of deliveries received, not of their order.

Hypothesis draws deliveries for a few contacts — full form POSTs, partial JSON bodies, partial GETs in
wire keys, and GETs of the customer's own parameters — and sends them over real HTTP to one listener
twice: once in transactionid order, once shuffled with duplicates, then replays some of the second
set. Each run lives under its own contact ids and transactionids (offsets), so both land side by
side in the same tables, which must then hold the same rows once the offsets are taken out. SQLite,
PostgreSQL and MariaDB (as the customer's projection database).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.db import listener as t
from contactsync.errors import ConfigError
from contactsync.listener.handlers import replay
from contactsync.shortcodes import render
from contactsync.wire import phpform
from contactsync.wire.payload import SyncPayload
from support.listener import FORM, JSON, TOKEN, Listener, signed, start_listener, wait_for

MAPPING = {"cid": "id", "em": "email", "f3": "field:3", "grade": "lead_label"}
"""The GET mapping the listener is configured with, for the customer's-own-parameters GETs."""

TEXT = st.sampled_from(["", "a", "b", "Zoë & co"])
CONTACT_IDS = (1, 2, 3)


def _maybe(draw: st.DrawFn, keys: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """A map carrying a drawn subset of ``keys`` (absent and present-but-empty stay apart)."""
    return {key: draw(strategy) for key, strategy in keys.items() if draw(st.booleans())}


@st.composite
def delivery(draw: st.DrawFn, transactionid: int) -> dict[str, Any]:
    contact = {
        "id": draw(st.sampled_from(CONTACT_IDS)),
        **_maybe(draw, dict.fromkeys(("email", "phone", "profile_url"), TEXT)),
    }
    wire: dict[str, Any] = {"transactionid": transactionid, "contact": contact}
    if draw(st.booleans()):
        wire["fields"] = [
            {"id": fid, **_maybe(draw, {"name": TEXT, "value": TEXT})}
            for fid in draw(st.lists(st.sampled_from([3, 4, 5]), min_size=1, max_size=3, unique=True))
        ]
    if draw(st.booleans()):
        wire["lead-status"] = _maybe(draw, {"score": st.integers(0, 60), "label": TEXT})
    date = st.sampled_from(["2026-03-01 10:00:00", "2026-04-01 10:00:00"])
    sections = {
        "campaigns-opened": st.fixed_dictionaries(
            {"id": st.sampled_from([7, 8]), "name": TEXT, "open_date": date}
        ),
        "links-clicked": st.fixed_dictionaries(
            {
                "url": st.sampled_from(["https://x.example/a", "https://x.example/b?c=1"]),
                "clicks": st.integers(0, 9),
            }
        ),
        "pages-visited": st.fixed_dictionaries(
            {"page": st.sampled_from(["/pricing", "/"]), "visit_date": date}
        ),
        "goals-reached": st.fixed_dictionaries(
            {"id": st.sampled_from([11, 12]), "name": TEXT, "reach_date": date}
        ),
        "lead-score": st.fixed_dictionaries(
            {"id": st.just(15), "name": TEXT, "score": st.integers(0, 20), "score_date": date}
        ),
    }
    for section, item in sections.items():
        if draw(st.booleans()):
            wire[section] = draw(st.lists(item, min_size=1, max_size=3))
    wire["as"] = draw(st.sampled_from(["form", "json", "get", "plain"]))
    return wire


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int], list[int]]:
    """Deliveries (in transactionid order), an arrival order with duplicates, and entries to replay."""
    tids = sorted(draw(st.lists(st.integers(1, 10_000), min_size=1, max_size=7, unique=True)))
    deliveries = [draw(delivery(tid)) for tid in tids]
    order = draw(st.permutations(range(len(deliveries))))
    repeats = draw(st.lists(st.sampled_from(range(len(deliveries))), max_size=3))
    arrival = list(order)
    for position, index in zip(
        draw(st.lists(st.integers(0, 10), min_size=len(repeats), max_size=len(repeats))), repeats, strict=True
    ):
        arrival.insert(min(position, len(arrival)), index)
    replays = draw(st.lists(st.sampled_from(range(len(deliveries))), max_size=2, unique=True))
    return deliveries, arrival, replays


class Run:
    """One replay of a history under its own contact-id and transactionid offsets."""

    counter = itertools.count(1)

    def __init__(self) -> None:
        number = next(self.counter)
        self.contact_base = number * 1000
        self.tid_base = number * 1_000_000

    def shifted(self, wire: dict[str, Any]) -> dict[str, Any]:
        moved = {k: v for k, v in wire.items() if k != "as"}
        moved["transactionid"] = str(wire["transactionid"] + self.tid_base)
        moved["contact"] = {**wire["contact"], "id": wire["contact"]["id"] + self.contact_base}
        return moved

    def send(self, listener: Listener, wire: dict[str, Any]) -> None:
        moved = self.shifted(wire)
        tid = moved["transactionid"]
        kind = wire["as"]
        if kind == "form":
            body = SyncPayload.from_wire(moved).to_form()
            answer = listener.post_signed(body, FORM, msg_id=tid)
        elif kind == "json":
            answer = listener.post_signed(json.dumps(moved), JSON, msg_id=tid)
        else:
            query = phpform.encode(moved if kind == "get" else _plain(moved))
            target = f"/sync/{TOKEN}?{query}"
            answer = listener.http.get(listener.base + target, headers=signed(target, msg_id=tid))
        assert answer.status_code == 200, answer.text

    def key(self, wire: dict[str, Any]) -> str:
        return str(wire["transactionid"] + self.tid_base)


def _plain(moved: dict[str, Any]) -> dict[str, Any]:
    """The customer's own parameters for the mapped subset of a delivery, plus one unmapped one."""
    params: dict[str, Any] = {"cid": moved["contact"]["id"], "utm": "spring"}
    if "email" in moved["contact"]:
        params["em"] = moved["contact"]["email"]
    for field in moved.get("fields", []):
        if field["id"] == 3 and "value" in field:
            params["f3"] = field["value"]
    if "label" in moved.get("lead-status", {}):
        params["grade"] = moved["lead-status"]["label"]
    return params


def _drained(listener: Listener, entries: int) -> bool:
    with listener.engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(t.inbox)).scalar_one()
        pending = conn.execute(
            sa.select(sa.func.count()).where(t.handler_runs.c.state != "done")
        ).scalar_one()
    return stored >= entries and pending == 0


def _snapshot(engine: sa.Engine, run: Run) -> dict[str, list[tuple[Any, ...]]]:
    """The projection rows of ``run``'s contacts, offsets removed, surrogate ids and arrival times out."""
    ids = [str(run.contact_base + n) for n in CONTACT_IDS]
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in t.PROJECTION_TABLES:
            columns = [c for c in table.c if c.name not in ("id", "updated_at_ms")]
            rows = conn.execute(sa.select(*columns).where(table.c.contact_id.in_(ids))).all()
            tables[table.name] = sorted(
                (tuple(_unshift(c.name, v, run) for c, v in zip(columns, row, strict=True)) for row in rows),
                key=repr,
            )
    return tables


def _unshift(column: str, value: Any, run: Run) -> Any:
    if value is None:
        return None
    if column == "contact_id":
        return int(value) - run.contact_base
    if column.endswith("transactionid"):
        return int(value) - run.tid_base
    return value


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def listener(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[tuple[Listener, sa.Engine]]:
    options: dict[str, Any] = {"listener_get_mapping": MAPPING}
    if request.param == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
    else:
        url = sqlite_url
        if request.param == "mariadb":
            options["listener_projection_url"] = str(request.getfixturevalue("mariadb_url"))
    for started in start_listener(url, **options):
        projection = sa.create_engine(options.get("listener_projection_url", url))
        try:
            yield started, projection
        finally:
            projection.dispose()


@settings(max_examples=40)
@given(history=histories())
def test_any_order_with_duplicates_and_replays_gives_the_in_order_tables(
    listener: tuple[Listener, sa.Engine], history: tuple[list[dict[str, Any]], list[int], list[int]]
) -> None:
    client, projection = listener
    deliveries, arrival, replays = history
    in_order, shuffled = Run(), Run()
    with client.engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(t.inbox)).scalar_one()
    for wire in deliveries:
        in_order.send(client, wire)
    for index in arrival:
        shuffled.send(client, deliveries[index])
    expected = before + 2 * len(deliveries)
    wait_for(lambda: _drained(client, expected))
    for index in replays:
        replay(client.engine, shuffled.key(deliveries[index]), "sql")
    wait_for(lambda: _drained(client, expected))
    assert _snapshot(projection, shuffled) == _snapshot(projection, in_order)


# --- the scenarios, by name, through the real request path --------------------------------------


@pytest.fixture
def sqlite_listener(sqlite_url: str) -> Iterator[Listener]:
    yield from start_listener(sqlite_url, listener_get_mapping={"param1": "id", "param2": "field:3"})


def _get(listener: Listener, query: str, webhook_id: str | None) -> Any:
    target = f"/sync/{TOKEN}?{query}"
    headers = signed(target, msg_id=webhook_id) if webhook_id is not None else {}
    return listener.http.get(listener.base + target, headers=headers)


def test_regression_a_newer_partial_get_does_not_blank_the_full_post(sqlite_listener: Listener) -> None:
    full = {
        "transactionid": "100",
        "contact": {
            "id": 42,
            "email": "jane@example.com",
            "phone": "+15551234567",
            "profile_url": "https://p/42",
        },
        "fields": [
            {"id": 3, "name": "First Name", "value": "Jane"},
            {"id": 4, "name": "City", "value": "Bern"},
            {"id": 5, "name": "Plan", "value": "Pro"},
        ],
    }
    assert sqlite_listener.post_signed(SyncPayload.from_wire(full).to_form(), msg_id="100").status_code == 200
    partial = phpform.encode(
        {"transactionid": "200", "contact": {"id": 42}, "fields": [{"id": 4, "value": "Basel"}]}
    )
    assert _get(sqlite_listener, partial, "200").status_code == 200
    wait_for(lambda: _drained(sqlite_listener, 2))
    assert sqlite_listener.rows(
        t.contacts, "last_transactionid", *(f"{a}_transactionid" for a in t.CONTACT_ATTRIBUTES)
    ) == [
        {
            "contact_id": "42",
            "email": "jane@example.com",
            "phone": "+15551234567",
            "profile_url": "https://p/42",
            "lead_score": None,
            "lead_label": None,
        }
    ]
    values = sqlite_listener.rows(t.field_values, "contact_id", "name_transactionid", "value_transactionid")
    assert values == [
        {"field_id": "3", "name": "First Name", "value": "Jane"},
        {"field_id": "4", "name": "City", "value": "Basel"},
        {"field_id": "5", "name": "Plan", "value": "Pro"},
    ]


def test_regression_a_late_older_delivery_still_adds_its_goal(sqlite_listener: Listener) -> None:
    def sent(tid: int, email: str, goals: list[dict[str, Any]]) -> None:
        body = SyncPayload.from_wire(
            {"transactionid": str(tid), "contact": {"id": 42, "email": email}, "goals-reached": goals}
        ).to_form()
        assert sqlite_listener.post_signed(body, msg_id=str(tid)).status_code == 200

    sent(200, "new@example.com", [{"id": 11, "name": "Bought", "reach_date": "2026-03-04 13:00:00"}])
    wait_for(lambda: _drained(sqlite_listener, 1))
    sent(150, "old@example.com", [{"id": 12, "name": "Signed up", "reach_date": "2026-03-02 09:00:00"}])
    wait_for(lambda: _drained(sqlite_listener, 2))
    goals = sqlite_listener.rows(t.goals_reached, "contact_id", "name", "reach_date")
    assert goals == [
        {"goal_id": "11", "first_transactionid": 200},
        {"goal_id": "12", "first_transactionid": 150},
    ]
    assert sqlite_listener.rows(t.contacts)[0]["email"] == "new@example.com"


def test_regression_the_seed_get_example_is_acknowledged_stored_once_and_projected(
    sqlite_listener: Listener,
) -> None:
    template = f"{sqlite_listener.base}/sync/{TOKEN}?param1=[#SHORTCODE-1#]&param2=[#SHORTCODE_2#]"
    url = render(template, {"SHORTCODE-1": "42", "SHORTCODE_2": "Zoë & co"})
    query = url.partition("?")[2]
    first = _get(sqlite_listener, query, "7262734018228486144")
    assert first.status_code == 200, first.text
    # keyed by its webhook-id, which is the platform's transactionid: answered like any delivery
    assert first.json() == {"ok": True, "duplicate": False, "transactionid": "7262734018228486144"}
    again = _get(sqlite_listener, query, "7262734018228486144")
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    wait_for(lambda: _drained(sqlite_listener, 1))
    assert sqlite_listener.count(t.inbox) == 1
    assert sqlite_listener.rows(t.field_values, "name", "name_transactionid") == [
        {"contact_id": "42", "field_id": "3", "value": "Zoë & co", "value_transactionid": 7262734018228486144}
    ]


def test_a_get_without_webhook_id_gets_a_generated_key_and_is_not_deduplicated(sqlite_url: str) -> None:
    """Only a listener without a secret can see one: the platform always signs, with a webhook-id."""
    opened = start_listener(sqlite_url, listener_secret="", listener_get_mapping={"param1": "id"})
    sqlite_listener = next(opened)
    answers = [_get(sqlite_listener, "param1=7&utm=x", None).json() for _ in range(2)]
    assert [a["duplicate"] for a in answers] == [False, False]
    assert [a["deduplicable"] for a in answers] == [False, False]
    assert all(a["key"].startswith("local-") for a in answers)
    assert answers[0]["key"] != answers[1]["key"]
    wait_for(lambda: _drained(sqlite_listener, 2))
    with sqlite_listener.engine.connect() as conn:
        stored = conn.execute(sa.select(t.inbox.c.query, t.inbox.c.deduplicable)).all()
    assert [tuple(row) for row in stored] == [("param1=7&utm=x", False)] * 2  # unmapped utm stays visible
    assert [row["contact_id"] for row in sqlite_listener.rows(t.contacts)] == ["7"]
    opened.close()


def test_a_bad_get_mapping_is_refused_naming_the_entry(sqlite_url: str) -> None:
    with pytest.raises(ConfigError, match="'p' maps to 'fields:3'"):
        next(start_listener(sqlite_url, listener_get_mapping={"p": "fields:3"}))
