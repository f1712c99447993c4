"""SyncPayload bodies as a stock PHP 8 listener sees them: ``$_POST`` for forms, ``json_decode`` for JSON.

One ``php -S`` on a free 127.0.0.1 port serves a page that answers with what it decoded; every test posts
to it, so the whole file runs one PHP process.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.wire.payload import (
    SECTIONS,
    AutomationTrigger,
    CampaignOpen,
    Contact,
    FieldValue,
    GoalReach,
    LeadScoreEntry,
    LeadStatus,
    LinkClick,
    PageVisit,
    SyncPayload,
)
from support import examples
from support.php import php_server

pytestmark = pytest.mark.php

PAGE = r"""<?php
function types($v) { return is_array($v) ? array_map('types', $v) : gettype($v); }
header('Content-Type: application/json');
$flags = JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR;
switch ($_GET['show'] ?? '') {
    case 'post':
        echo json_encode($_POST, $flags);
        break;
    case 'print_r':
        echo json_encode(print_r($_POST, true), $flags);
        break;
    case 'json':
        $data = json_decode(file_get_contents('php://input'), true, 512, JSON_THROW_ON_ERROR);
        echo json_encode(['data' => $data, 'types' => types($data)], $flags);
        break;
}
"""

D = "2026-11-27 09:30:00"


@pytest.fixture(scope="module")
def listener(php: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A PHP listener page on ``php -S`` (stock ini: max_input_vars 1000); yields its port."""
    root = tmp_path_factory.mktemp("payload_php")
    (root / "index.php").write_text(PAGE)
    with php_server(php, root, "-t", str(root)) as port:
        yield port


def post(port: int, show: str, body: str, content_type: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST", f"/index.php?show={show}", body=body.encode(), headers={"Content-Type": content_type}
        )
        response = conn.getresponse()
        text = response.read()
        assert response.status == 200, text
    finally:
        conn.close()
    return json.loads(text)


def php_post(port: int, p: SyncPayload) -> Any:
    return post(port, "post", p.to_form(), "application/x-www-form-urlencoded")


def without_empty(value: Any) -> Any:
    """http_build_query sends no variable for an empty array, so PHP never sees one."""
    if isinstance(value, dict):
        return {k: without_empty(v) for k, v in value.items() if v not in ([], {})}
    if isinstance(value, list):
        return [without_empty(v) for v in value]
    return value


def full() -> SyncPayload:
    return SyncPayload(
        transactionid=7262734018228486144,
        contact=Contact(
            id=42, email="jane+tag@example.com", phone="+1 555 123-4567", profile_url="https://p/c/42"
        ),
        fields=[
            FieldValue(id=3, name="First Name", value="Jane"),
            FieldValue(id=4, name="Notes", value="a&b=c [x] 100% ~ é 中文 \n line two"),
            FieldValue(id=5, name="Empty", value=""),
        ],
        campaigns_opened=[CampaignOpen(id=7, name="Spring / Sale", open_date=D)],
        links_clicked=[LinkClick(url="https://example.com/a?b=c&d=e#f", clicks=3)],
        pages_visited=[PageVisit(page="https://example.com/pricing", visit_date=D)],
        automation_triggered=[AutomationTrigger(id=5, name="Welcome", trigger_date=D)],
        goals_reached=[GoalReach(id=6, name="Bought", reach_date=D)],
        webhooks_triggered=[],
        lead_score=[LeadScoreEntry(id=9, name="Opened", score=-5, score_date=D), LeadScoreEntry()],
        lead_status=LeadStatus(score=40, label="Warm"),
        **{"x-custom": {"a": "1", "b": ["p", "q"]}},
    )


def test_form_post_is_the_wire_structure(listener: int) -> None:
    p = full()
    seen = php_post(listener, p)
    assert seen == without_empty(p.to_wire(json_types=False))
    sent = [*SECTIONS[:6], *SECTIONS[7:]]  # webhooks-triggered is selected but empty
    assert list(seen) == ["transactionid", "contact", *sent, "x-custom"]
    assert seen["contact"]["id"] == "42"  # everything is a string in $_POST
    assert seen["lead-score"][1] == {"id": "", "name": "", "score": "", "score_date": ""}  # never undefined
    assert SyncPayload.from_wire(seen) == p.model_copy(update={"webhooks_triggered": None})


def test_print_r_shows_the_documented_shape(listener: int) -> None:
    p = SyncPayload(
        transactionid=7262734018228486144,
        contact=Contact(id=42, email="jane@example.com", phone="+15551234567", profile_url="https://…"),
        fields=[FieldValue(id=3, name="First Name", value="Jane")],
        lead_status=LeadStatus(score=40, label="Warm"),
    )
    shown = post(listener, "print_r", p.to_form(), "application/x-www-form-urlencoded")
    # wire.md's example, with its elisions filled in by the one field above
    documented = """Array ( [transactionid] => 7262734018228486144
        [contact] => Array ( [id] => 42 [email] => jane@example.com [phone] => +15551234567 [profile_url] => https://… )
        [fields] => Array ( [0] => Array ( [id] => 3 [name] => First Name [value] => Jane ) )
        [lead-status] => Array ( [score] => 40 [label] => Warm ) )"""  # noqa: E501
    assert re.sub(r"\s+", " ", shown).strip() == re.sub(r"\s+", " ", documented)


def test_json_body_decodes_with_integer_ids(listener: int) -> None:
    p = full()
    answer = post(listener, "json", p.to_json(), "application/json; charset=utf-8")
    assert answer["data"] == p.to_wire(json_types=True)
    types = answer["types"]
    assert types["transactionid"] == "string"  # 63 bits: a string, so JavaScript receivers keep every digit
    assert types["contact"] == {
        "id": "integer",
        "email": "string",
        "phone": "string",
        "profile_url": "string",
    }
    assert types["fields"][0] == {"id": "integer", "name": "string", "value": "string"}
    assert types["links-clicked"][0] == {"url": "string", "clicks": "integer"}
    assert types["lead-score"][0]["score"] == "integer"
    assert types["lead-score"][1]["score"] == "string"  # missing: "", never null or absent
    assert types["lead-status"] == {"score": "integer", "label": "string"}
    assert answer["data"]["webhooks-triggered"] == []
    assert SyncPayload.from_wire(answer["data"]) == p


def test_stock_php_truncates_a_full_size_payload(listener: int) -> None:
    """Why the platform warns: 100 items per section is far over PHP's default max_input_vars (1000)."""
    p = full().model_copy(update={"fields": [FieldValue(id=i, name=f"F{i}", value="v") for i in range(400)]})
    seen = php_post(listener, p)
    assert p.to_form().count("&") + 1 > 1000
    assert len(seen["fields"]) < 400


# --- generated payloads ------------------------------------------------------------------------------

text = st.text(st.characters(exclude_categories=["Cs"], max_codepoint=0x2FFF), max_size=10)
number = st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1)


def items(cls: type[Any]) -> st.SearchStrategy[Any]:
    known = {
        name: number if info.annotation == (int | None) else text for name, info in cls.model_fields.items()
    }
    return st.lists(st.fixed_dictionaries(known).map(lambda kw: cls(**kw)), max_size=3)


generated = st.builds(
    SyncPayload,
    transactionid=st.integers(min_value=0, max_value=2**63 - 1),
    contact=st.fixed_dictionaries({"id": number, "email": text, "phone": text, "profile_url": text}),
    fields=st.none() | items(FieldValue),
    links_clicked=st.none() | items(LinkClick),
    lead_score=st.none() | items(LeadScoreEntry),
    lead_status=st.none() | st.builds(LeadStatus, score=number, label=text),
)


@given(generated)
@settings(max_examples=examples(ci=100, local=15))
def test_generated_payloads_reach_php_intact(listener: int, p: SyncPayload) -> None:
    assert php_post(listener, p) == without_empty(p.to_wire(json_types=False))
    answer = post(listener, "json", p.to_json(), "application/json")
    assert answer["data"] == p.to_wire(json_types=True)
