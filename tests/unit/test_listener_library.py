"""The listener library: ``verify`` and ``parse`` as a customer's own app uses them, and their refusals."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from contactsync.errors import PayloadError, PHPFormLimitError, RequestError, SecretError, SignatureError
from contactsync.listener import Limits, error_response, parse, secret_keys, verify
from contactsync.wire import signing
from support.listener import SECRET, payload

OTHER = "whsec_" + base64.b64encode(b"o" * 32).decode()


def test_parse_accepts_the_three_encodings_identically() -> None:
    sent = payload(42)
    from_form = parse(sent.to_form().encode(), "application/x-www-form-urlencoded")
    from_json = parse(sent.to_json(), "application/json; charset=utf-8")
    from_get = parse(b"", "", method="GET", query=sent.to_form())
    assert from_form == from_json == from_get == sent


def test_verify_accepts_reference_library_signatures_and_rotation() -> None:
    body = payload(7).to_form()
    now = int(time.time())
    headers = Webhook(SECRET).sign("7", datetime.fromtimestamp(now, UTC), body)
    verify(
        {"webhook-id": "7", "webhook-timestamp": str(now), "webhook-signature": headers},
        body,
        SECRET,
        now=now,
    )
    rotated = signing.headers([OTHER, SECRET], msg_id="7", timestamp=now, content=body)
    verify(rotated, body, SECRET, now=now)
    verify(rotated, body, f"{OTHER} {SECRET}", now=now)
    verify(rotated, body.encode(), secret_keys(f"{OTHER},{SECRET}"), now=now)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h: {k: v for k, v in h.items() if k != "webhook-signature"}, "missing_header"),
        (lambda h: {**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) - 301)}, "too_old"),
        (lambda h: {**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 301)}, "too_new"),
        (lambda h: {**h, "webhook-id": "8"}, "no_match"),
        (lambda h: {**h, "webhook-timestamp": "soon"}, "bad_timestamp"),
    ],
)
def test_verify_refusals_name_their_reason(
    change: Callable[[dict[str, str]], dict[str, str]], reason: str
) -> None:
    body = payload(7).to_form()
    now = int(time.time())
    headers = signing.headers(SECRET, msg_id="7", timestamp=now, content=body)
    with pytest.raises(SignatureError) as caught:
        verify(change(headers), body, SECRET, now=now)
    assert caught.value.reason == reason
    assert error_response(caught.value)[0] == 401


def test_a_malformed_secret_is_a_config_error() -> None:
    with pytest.raises(SecretError):
        secret_keys("not-a-secret")


def test_limits_and_encodings_map_to_statuses() -> None:
    small = Limits(max_body_bytes=100, max_input_vars=5, max_nesting=3)
    cases: list[tuple[bytes, str, int, str]] = [
        (b"a=" + b"x" * 200, "application/x-www-form-urlencoded", 413, "body_too_large"),
        (b"a=1&b=2&c=3&d=4&e=5&f=6&g=7", "", 413, "max_input_vars"),
        (b"a[b][c][d][e]=1", "", 400, "max_input_nesting_level"),
        (b"a=%C3%28", "", 400, "invalid_utf8"),
        (b"{", "application/json", 400, "invalid_json"),
        (b"[]", "application/json", 422, "invalid_payload"),
        (b"<x/>", "application/xml", 415, "unsupported_content_type"),
    ]
    for body, content_type, status, error in cases:
        with pytest.raises((RequestError, PHPFormLimitError, PayloadError)) as caught:
            parse(body, content_type, limits=small)
        got_status, answer = error_response(caught.value)
        assert (got_status, answer["error"]) == (status, error), body


def test_payload_errors_carry_the_key_path() -> None:
    body = json.dumps(
        {"transactionid": "1", "contact": {"id": 1}, "links-clicked": [{"url": "u", "clicks": "x"}]}
    )
    with pytest.raises(PayloadError) as caught:
        parse(body, "application/json")
    status, answer = error_response(caught.value)
    assert (status, answer["path"]) == (422, "links-clicked[0].clicks")


def test_utf8_outside_ascii_is_accepted() -> None:
    body = payload(3, email="jöhn@exämple.com").to_form().encode()
    assert parse(body).contact.email == "jöhn@exämple.com"
