"""The listener's request path over real HTTP: accepted payloads land in the projection, bad ones never do."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.db import listener as t
from support import examples, run_php
from support.listener import (
    FORM,
    JSON,
    TOKEN,
    Listener,
    payload,
    signed,
    start_listener,
    wait_for,
)


@pytest.fixture
def listener(db_url: str) -> Iterator[Listener]:
    yield from start_listener(db_url, listener_max_input_vars=500)


@pytest.fixture
def sqlite_listener(sqlite_url: str) -> Iterator[Listener]:
    """The request path is the same on every database: refusals are tested on SQLite only."""
    yield from start_listener(sqlite_url, listener_max_input_vars=500)


@pytest.fixture
def open_listener(sqlite_url: str) -> Iterator[Listener]:
    """No secret: what a listener behind only the private URL sees (decoding is reached by anything)."""
    yield from start_listener(sqlite_url, listener_secret="", listener_max_input_vars=500)


def test_form_post_lands_in_projection_and_duplicates_have_no_effect(listener: Listener) -> None:
    sent = payload(7262734018228486144)
    body = sent.to_form()
    first = listener.post_signed(body, msg_id=str(sent.transactionid))
    assert first.status_code == 200
    assert first.json() == {"ok": True, "duplicate": False, "transactionid": "7262734018228486144"}
    again = listener.post_signed(body, msg_id=str(sent.transactionid))
    assert again.json()["duplicate"] is True
    wait_for(lambda: listener.done(1))
    assert listener.count(t.inbox) == 1
    assert listener.count(t.handler_runs) == 1
    tables = listener.projected()
    assert tables["sync_contacts"] == [
        {
            "contact_id": "42",
            "email": "jane@example.com",
            "phone": "+15551234567",
            "profile_url": "https://platform.example/contacts/42",
            "lead_score": "40",
            "lead_label": "Warm",
            "last_transactionid": 7262734018228486144,
            **{f"{name}_transactionid": 7262734018228486144 for name in t.CONTACT_ATTRIBUTES},
        }
    ]
    stamps = {"name_transactionid": 7262734018228486144, "value_transactionid": 7262734018228486144}
    assert tables["sync_field_values"] == [
        {"contact_id": "42", "field_id": "3", "name": "First Name", "value": "Jane", **stamps},
        {"contact_id": "42", "field_id": "4", "name": "City", "value": "Zürich & Co", **stamps},
    ]
    assert [(r["url"], r["clicks"]) for r in tables["sync_links_clicked"]] == [
        ("https://example.com/a?b=c&d[]=1", 3)
    ]
    assert [(r["score_id"], r["score"], r["score_date"]) for r in tables["sync_lead_scores"]] == [
        ("15", "10", "2026-03-06 15:00:00")
    ]
    for name in ("sync_campaigns_opened", "sync_pages_visited", "sync_goals_reached"):
        assert len(tables[name]) == 1
    with listener.engine.connect() as conn:
        stored = conn.execute(sa.select(t.inbox)).one()
    assert stored.body == body.encode()
    assert json.loads(stored.headers)["webhook-id"] == "7262734018228486144"
    assert stored.source_address == "127.0.0.1"


def test_json_and_get_give_the_same_projection_as_form(listener: Listener, sqlite_url: str) -> None:
    form, as_json, as_get = (
        payload(1001, contact_id=1),
        payload(1002, contact_id=2),
        payload(1003, contact_id=3),
    )
    assert listener.post_signed(form.to_form(), msg_id="1001").status_code == 200
    assert listener.post_signed(as_json.to_json(), JSON, msg_id="1002").status_code == 200
    target = f"/sync/{TOKEN}?{as_get.to_form()}"
    got = listener.http.get(listener.base + target, headers=signed(target, msg_id="1003"))
    assert got.status_code == 200, got.text
    wait_for(lambda: listener.done(3))
    stamps = [f"{name}_transactionid" for name in t.CONTACT_ATTRIBUTES]
    contacts = listener.rows(t.contacts, "last_transactionid", "contact_id", "profile_url", *stamps)
    assert len(contacts) == 3
    assert contacts[0] == contacts[1] == contacts[2]
    for table in (t.field_values, t.links_clicked, t.lead_scores):
        per_contact: dict[Any, list[dict[str, Any]]] = {}
        unstamped = ("first_transactionid", "name_transactionid", "value_transactionid")
        for row in listener.rows(table, *unstamped):
            per_contact.setdefault(row.pop("contact_id"), []).append(row)
        assert per_contact["1"] == per_contact["2"] == per_contact["3"]


@pytest.mark.php
def test_body_from_php_http_build_query_is_accepted_identically(listener: Listener, php: str) -> None:
    sent = payload(2001, contact_id=77)
    wire = json.dumps(sent.to_wire(json_types=False))
    php_body = run_php(
        php, "echo http_build_query(json_decode(stream_get_contents(STDIN), true));", wire.encode()
    )
    assert php_body == sent.to_form().encode()
    assert listener.post_signed(php_body, msg_id="2001").status_code == 200
    wait_for(lambda: listener.done(1))
    assert listener.rows(t.contacts)[0]["contact_id"] == "77"
    assert len(listener.rows(t.field_values)) == 2


def _stale(body: str) -> dict[str, str]:
    return signed(body, msg_id="1", timestamp=int(time.time()) - 301)


BAD: list[tuple[str, Callable[[Listener], httpx.Response], int, str]] = [
    ("wrong token", lambda lst: lst.http.post(f"{lst.base}/sync/{'b' * 46}", content="x"), 404, "not_found"),
    ("other path", lambda lst: lst.http.get(f"{lst.base}/"), 404, "not_found"),
    ("token prefix", lambda lst: lst.http.post(lst.sync[:-1], content="x"), 404, "not_found"),
    ("method", lambda lst: lst.http.put(lst.sync, content="x"), 405, "method_not_allowed"),
    ("no signature", lambda lst: lst.post(payload(1).to_form()), 401, "signature"),
    (
        "forged signature",
        lambda lst: lst.post(
            payload(1, email="evil@example.com").to_form(), **signed(payload(1).to_form(), msg_id="1")
        ),
        401,
        "signature",
    ),
    (
        "other secret",
        lambda lst: lst.post(
            payload(1).to_form(),
            **signed(payload(1).to_form(), msg_id="1", secret="whsec_" + "QUJD" * 8),
        ),
        401,
        "signature",
    ),
    (
        "replayed old timestamp",
        lambda lst: lst.post(payload(1).to_form(), **_stale(payload(1).to_form())),
        401,
        "signature",
    ),
    ("oversize body", lambda lst: lst.post_signed(b"a=" + b"x" * (5 * 1024 * 1024)), 413, "body_too_large"),
    (
        "too many variables",
        lambda lst: lst.post_signed(payload(1).to_form() + "&x[]=1" * 600),
        413,
        "max_input_vars",
    ),
    (
        "nesting 65",
        lambda lst: lst.post_signed(payload(1).to_form() + "&deep" + "[a]" * 65 + "=1"),
        400,
        "max_input_nesting_level",
    ),
    (
        "invalid utf-8 in form",
        lambda lst: lst.post_signed(payload(1).to_form() + "&contact%5Bemail%5D=%FF%FE"),
        400,
        "invalid_utf8",
    ),
    ("invalid utf-8 in json", lambda lst: lst.post_signed(b'{"a": "\xff"}', JSON), 400, "invalid_utf8"),
    (
        "lone surrogate in json",
        lambda lst: lst.post_signed(payload(1).to_json().replace("jane@", "\\ud800@"), JSON),
        400,
        "invalid_utf8",
    ),
    (
        "surrogate encoded in a form",
        lambda lst: lst.post_signed(payload(1).to_form() + "&contact%5Bemail%5D=%ED%A0%80"),
        400,
        "invalid_utf8",
    ),
    (
        "invalid utf-8 in a query",
        lambda lst: lst.get_signed(payload(1).to_form() + "&x=%C3%28"),
        400,
        "invalid_utf8",
    ),
    (
        "too many variables in json",
        lambda lst: lst.post_signed(payload(1).to_json()[:-1] + ', "x": [' + "1," * 600 + "1]}", JSON),
        413,
        "max_input_vars",
    ),
    (
        "nesting 65 in json",
        lambda lst: lst.post_signed(
            payload(1).to_json()[:-1] + ', "deep": ' + "[" * 65 + "1" + "]" * 65 + "}", JSON
        ),
        400,
        "max_input_nesting_level",
    ),
    (
        "too many variables in a query",
        lambda lst: lst.get_signed(payload(1).to_form() + "&x[]=1" * 600),
        413,
        "max_input_vars",
    ),
    ("not json", lambda lst: lst.post_signed(b"{nope", JSON), 400, "invalid_json"),
    ("json array", lambda lst: lst.post_signed(b"[1, 2]", JSON), 422, "invalid_payload"),
    ("json string", lambda lst: lst.post_signed(b'"hello"', JSON), 422, "invalid_payload"),
    (
        "wrong type",
        lambda lst: lst.post_signed(json.dumps({"transactionid": "1", "contact": {"id": "x"}}), JSON),
        422,
        "invalid_payload",
    ),
    ("missing contact", lambda lst: lst.post_signed("transactionid=5"), 422, "invalid_payload"),
    ("content type", lambda lst: lst.post_signed(b"<xml/>", "text/xml"), 415, "unsupported_content_type"),
]


@pytest.mark.parametrize(("why", "send", "status", "error"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_a_clear_error_and_never_stored(
    sqlite_listener: Listener, why: str, send: Callable[[Listener], httpx.Response], status: int, error: str
) -> None:
    answer = send(sqlite_listener)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert sqlite_listener.count(t.inbox) == 0
    assert sqlite_listener.count(t.handler_runs) == 0


def test_bad_key_path_is_named(sqlite_listener: Listener) -> None:
    body = payload(1).to_form() + "&fields%5B1%5D%5Bid%5D=abc"
    answer = sqlite_listener.post_signed(body)
    assert answer.status_code == 422
    assert answer.json()["path"] == "fields[1].id"


def test_unknown_keys_are_kept(sqlite_listener: Listener) -> None:
    body = payload(9, extra={"utm": {"source": "mail"}}).to_form()
    assert sqlite_listener.post_signed(body, msg_id="9").status_code == 200
    assert sqlite_listener.count(t.inbox) == 1


def test_rejections_are_counted_in_metrics_under_the_private_path(sqlite_listener: Listener) -> None:
    sqlite_listener.post(payload(1).to_form())
    sqlite_listener.post_signed(b"[]", JSON)
    metrics = sqlite_listener.http.get(f"{sqlite_listener.sync}/metrics")
    assert metrics.status_code == 200
    assert 'contactsync_listener_rejected_total{reason="signature"} 1.0' in metrics.text
    assert 'contactsync_listener_rejected_total{reason="payload"} 1.0' in metrics.text
    assert sqlite_listener.http.get(f"{sqlite_listener.sync}/health").json()["ok"] is True
    assert sqlite_listener.http.get(f"{sqlite_listener.base}/metrics").status_code == 404


@pytest.mark.parametrize(("allowed", "status"), [(["10.0.0.0/8"], 404), (["10.0.0.0/8", "127.0.0.1"], 200)])
def test_ip_allow_list(sqlite_url: str, allowed: list[str], status: int) -> None:
    for lst in start_listener(sqlite_url, listener_allowed_ips=allowed):
        assert lst.post_signed(payload(5).to_form(), msg_id="5").status_code == status


form_names = st.text(alphabet="ab[]._ %&=+0123456789\x00", max_size=20)
bodies = st.one_of(
    st.binary(max_size=300),
    st.lists(st.tuples(form_names, st.text(max_size=10)), max_size=20).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")
    ),
    st.builds(lambda extra: payload(3).to_form() + extra, st.text(max_size=40)).map(
        lambda s: s.encode("utf-8", "surrogatepass")
    ),
)


@settings(max_examples=examples(ci=300, local=60))
@given(body=bodies, content_type=st.sampled_from([FORM, JSON, "", "text/plain", "multipart/form-data"]))
def test_fuzzed_bodies_never_get_a_5xx(open_listener: Listener, body: bytes, content_type: str) -> None:
    answer = open_listener.post(body, content_type)
    assert answer.status_code < 500, answer.text
    assert answer.headers["content-type"] == "application/json"
    if answer.status_code != 200:
        assert isinstance(answer.json()["error"], str)


def _log_in(http: httpx.Client, base: str, password: str) -> None:
    form = http.get(f"{base}/admin/login")
    csrf = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    answer = http.post(f"{base}/admin/login", data={"csrf_token": csrf, "password": password, "next": ""})
    assert answer.status_code == 303, answer.text


STORED_BY_OLDER_VERSIONS = [
    ("POST", JSON, "", payload(11).to_json().replace("jane@", "\\ud800@").encode()),
    ("POST", JSON, "", payload(12).to_json()[:-1].encode() + b', "deep": ' + b"[" * 80 + b"]" * 80 + b"}"),
    ("POST", FORM, "", payload(13).to_form().encode() + b"&contact%5Bemail%5D=%FF%ED%A0%80"),
    ("GET", "", payload(14).to_form() + "&x=%ED%A0%80", b""),
]


def test_admin_pages_show_whatever_was_stored(sqlite_url: str) -> None:
    """Requests accepted before the current rules (a lone surrogate in JSON, say) never break a page."""
    for lst in start_listener(sqlite_url, admin_password="correct horse"):
        with lst.engine.begin() as conn:
            for number, (method, content_type, query, body) in enumerate(STORED_BY_OLDER_VERSIONS, 11):
                conn.execute(
                    sa.insert(t.inbox).values(
                        transactionid=str(number),
                        received_at_ms=int(time.time() * 1000),
                        method=method,
                        content_type=content_type,
                        query=query,
                        headers="{}",
                        body=body,
                        source_address="127.0.0.1",
                    )
                )
        _log_in(lst.http, lst.base, "correct horse")
        pages = ["/", "/contacts", "/handlers"] + [f"/syncs/{n}" for n in range(11, 15)]
        for page in pages:
            answer = lst.http.get(f"{lst.base}/admin{page}")
            assert answer.status_code == 200, (page, answer.text[-2000:])
        detail = lst.http.get(f"{lst.base}/admin/syncs/11").text
        assert "lone UTF-16 surrogate" in detail


def test_metrics_report_each_handlers_backlog_and_lag(sqlite_url: str) -> None:
    """Pending and failed runs per handler and the age of its oldest pending run, as the database
    holds them (handlers with nothing left to do report no backlog)."""
    for listener in start_listener(sqlite_url, listener_run_handlers=False, listener_projection=False):
        now_ms = int(time.time() * 1000)
        runs = [  # (handler, state, received seconds ago)
            ("crm", "pending", 90),
            ("crm", "pending", 5),
            ("crm", "failed", 300),
            ("crm", "done", 400),
            ("hook", "done", 10),
            ("mail", "failed", 20),
        ]
        with listener.engine.begin() as conn:
            for n, (handler, state, ago_s) in enumerate(runs, start=1):
                at = now_ms - ago_s * 1000
                inbox_id = conn.execute(
                    t.inbox.insert()
                    .values(
                        transactionid=str(n),
                        received_at_ms=at,
                        method="POST",
                        query="",
                        headers="{}",
                        body=b"",
                    )
                    .returning(t.inbox.c.id)
                ).scalar_one()
                conn.execute(
                    t.handler_runs.insert().values(
                        inbox_id=inbox_id,
                        handler=handler,
                        state=state,
                        next_attempt_at_ms=at,
                        received_at_ms=at,
                    )
                )
        text = listener.http.get(f"{listener.sync}/metrics").text
        gauges = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("contactsync_listener_handler_")
        }
        assert gauges['contactsync_listener_handler_pending{handler="crm"}'] == 2
        assert gauges['contactsync_listener_handler_failed{handler="crm"}'] == 1
        assert gauges['contactsync_listener_handler_failed{handler="mail"}'] == 1
        assert 90 <= gauges['contactsync_listener_handler_lag_seconds{handler="crm"}'] < 150
        assert not any('handler="hook"' in name for name in gauges)
        assert 'contactsync_listener_handler_pending{handler="mail"}' not in gauges
