"""JSON bodies obey the form path's rules: the same variable and nesting limits, and text that is UTF-8."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.errors import ContactSyncError, PayloadError, PHPFormLimitError, RequestError
from contactsync.listener import Limits, error_response, parse
from contactsync.wire import jsonbody, phpform
from contactsync.wire.payload import SyncPayload
from support import examples
from support.listener import payload

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

keys = st.text(alphabet="abcxyz019", min_size=1, max_size=3)
trees = st.recursive(
    st.text(max_size=3),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4), st.dictionaries(keys, inner, min_size=1, max_size=4)
    ),
    max_leaves=40,
)


def _form_outcome(tree: dict[str, Any], max_vars: int, max_nesting: int) -> tuple[str, int] | None:
    try:
        phpform.decode(
            phpform.encode(tree), max_input_vars=max_vars, max_nesting=max_nesting, on_limit="raise"
        )
    except PHPFormLimitError as exc:
        return exc.limit, exc.value
    return None


def _json_outcome(tree: dict[str, Any], max_vars: int, max_nesting: int) -> tuple[str, int] | None:
    body = json.dumps(tree).encode()
    try:
        jsonbody.check_limits(tree, size_bytes=len(body), max_input_vars=max_vars, max_nesting=max_nesting)
    except PHPFormLimitError as exc:
        return exc.limit, exc.value
    return None


@settings(max_examples=examples(ci=400, local=150))
@given(
    tree=st.dictionaries(keys, trees, min_size=1, max_size=5),
    max_vars=st.integers(1, 30),
    max_nesting=st.integers(0, 4),
)
def test_a_tree_sent_as_json_or_as_a_form_meets_the_same_limits(
    tree: dict[str, Any], max_vars: int, max_nesting: int
) -> None:
    """Same limit, same figure: the variable count, or the depth of the first variable too deep."""
    assert _json_outcome(tree, max_vars, max_nesting) == _form_outcome(tree, max_vars, max_nesting)


SMALL = Limits(max_input_vars=5, max_nesting=3)


def _refusal(
    body: bytes | str, content_type: str = JSON, limits: Limits = SMALL
) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ContactSyncError) as caught:
        parse(body, content_type, limits=limits)
    return error_response(caught.value)


def test_limit_errors_have_the_form_path_shape_and_name_the_key() -> None:
    deep = {"transactionid": "1", "contact": {"id": 1}, "x": {"a": [{"b": {"c": 1}}]}}
    status, answer = _refusal(json.dumps(deep))
    assert status == 400
    assert answer["error"] == "max_input_nesting_level"
    assert (answer["path"], answer["value"], answer["maximum"]) == ("x.a[0].b", 4, 3)
    form_status, form_answer = _refusal("transactionid=1&contact[id]=1&x[a][0][b][c]=1", FORM)
    assert (form_status, form_answer.keys()) == (status, answer.keys())
    assert form_answer["path"] == "x[a][0][b][c]"

    many = {"transactionid": "1", "contact": {"id": 1, "email": "a@b.c"}, "utm": ["s", "m", "c", "t"]}
    status, answer = _refusal(json.dumps(many))
    assert (status, answer["error"], answer["value"], answer["path"]) == (413, "max_input_vars", 7, "utm[3]")
    form_status, form_answer = _refusal(phpform.encode(many), FORM)
    assert (form_status, form_answer["error"], form_answer["value"]) == (413, "max_input_vars", 7)
    assert form_answer["path"] == "utm[3]"


def test_a_body_at_the_limits_is_accepted() -> None:
    body = {"transactionid": "1", "contact": {"id": 1, "email": "a@b.c"}, "x": {"a": {"b": "c"}}, "y": "z"}
    assert parse(json.dumps(body), JSON, limits=SMALL).transactionid == 1  # 6 variables, nesting 3


def test_nesting_beyond_what_json_loads_can_build_is_a_limit_error() -> None:
    status, answer = _refusal('{"a":' + "[" * 100_000 + "]" * 100_000 + "}")
    assert (status, answer["error"], answer["value"]) == (400, "max_input_nesting_level", 100_000)


LONE = [
    ('"\\ud800"', "contact.email"),
    ('"x\\udfff"', "contact.email"),
    ('"\\ude00\\ud83d"', "contact.email"),  # a pair in the wrong order is two lone halves
]


@pytest.mark.parametrize(("escaped", "path"), LONE)
def test_a_lone_surrogate_in_json_is_invalid_utf8(escaped: str, path: str) -> None:
    body = payload(7).to_json().replace('"jane@example.com"', escaped)
    status, answer = _refusal(body, limits=Limits())
    assert (status, answer["error"]) == (400, "invalid_utf8")
    assert path in answer["detail"]
    with pytest.raises(PayloadError) as caught:
        SyncPayload.from_json(body)
    assert caught.value.path == path


def test_a_lone_surrogate_in_a_key_is_invalid_utf8_and_shown_escaped() -> None:
    body = payload(7).to_json()[:-1] + ', "utm": {"\\ud800k": "v"}}'
    status, answer = _refusal(body, limits=Limits())
    assert (status, answer["error"]) == (400, "invalid_utf8")
    assert "utm.\\ud800k" in answer["detail"]
    answer["detail"].encode("utf-8")  # the message itself is text


def test_escaped_pairs_and_real_utf8_are_text() -> None:
    body = payload(7).to_json().replace('"jane@example.com"', '"\\ud83d\\ude00 \u00e9@example.com"')
    assert parse(body, JSON).contact.email == "\U0001f600 é@example.com"


@pytest.mark.parametrize(
    ("body", "content_type", "kwargs"),
    [
        (b"transactionid=1&contact[id]=1&contact[email]=%ED%A0%80", FORM, {}),  # UTF-8 of U+D800
        (b"", "", {"method": "GET", "query": b"transactionid=1&contact[id]=1&contact[email]=%ED%A0%80"}),
        (b"", "", {"method": "GET", "query": "transactionid=1&contact[id]=1&contact[email]=%FF"}),
        (b'{"transactionid": "1", "contact": {"id": 1, "email": "\xed\xa0\x80"}}', JSON, {}),
        ('{"transactionid": "1", "contact": {"id": 1, "email": "\ud800"}}', JSON, {}),  # str handed over
        ("transactionid=1&contact[id]=1&contact[email]=\ud800", FORM, {}),
        ("", "", {"method": "GET", "query": "transactionid=1&contact[id]=1&contact[email]=\ud800"}),
    ],
)
def test_surrogates_and_invalid_utf8_are_refused_on_every_content_type(
    body: bytes | str, content_type: str, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(RequestError) as caught:
        parse(body, content_type, **kwargs)
    assert (caught.value.status, caught.value.code) == (400, "invalid_utf8")


def test_from_json_obeys_the_limits_as_from_form_does() -> None:
    body = json.dumps({"transactionid": "1", "contact": {"id": 1}, "x": {"a": {"b": {"c": 1}}}})
    with pytest.raises(PHPFormLimitError) as caught:
        SyncPayload.from_json(body, max_nesting=2)
    assert (caught.value.limit, caught.value.path) == ("max_input_nesting_level", "x.a.b")
    assert SyncPayload.from_json(body, max_nesting=3).transactionid == 1
