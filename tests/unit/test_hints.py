"""A test send's outcome in words: each status and network failure maps to its plain sentence."""

from __future__ import annotations

import pytest

from contactsync.delivery.hints import SECRET_UNKNOWN, hint


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, "", "paired"),
        (204, "", "paired"),
        (401, '{"error":"signature","reason":"no_match","detail":"no signature matches"}', SECRET_UNKNOWN),
        (401, "Unauthorized", SECRET_UNKNOWN),
        (401, '{"error":"signature","reason":"too_old"}', "clocks"),
        (401, '{"error":"signature","reason":"missing_header"}', "signature headers"),
        (403, "", "refuses this sender"),
        (404, '{"error":"not_found"}', "the URL is wrong"),
        (405, "", "choose POST or GET"),
        (410, "", "gone for good"),
        (413, '{"error":"body_too_large"}', "too large for the listener"),
        (415, "", "content type"),
        (422, "", "could not read the request"),
        (429, "", "slow down"),
        (301, "", "redirects are never followed"),
        (500, "", "server error"),
        (503, "", "server error"),
        (418, "", "HTTP 418"),
    ],
)
def test_statuses_in_words(status: int, body: str, expected: str) -> None:
    assert expected in hint(status, None, body=body)


def test_the_secret_sentence_says_where_to_add_it() -> None:
    assert "the listener does not know this action's secret" in SECRET_UNKNOWN.lower()
    assert "Secrets on the listener" in SECRET_UNKNOWN


@pytest.mark.parametrize(
    ("error", "detail", "expected"),
    [
        ("timeout", "timeout: ", "did not answer in time"),
        (
            "connect",
            "connect: Cannot connect to host 127.0.0.1:9 ssl:default [Connect call failed]",
            "refused",
        ),
        ("connect", "connect: [Errno 111] Connection refused", "connection refused"),
        (
            "connect",
            "connect: Cannot connect to host x:443 ssl:True [SSLCertVerificationError: certificate "
            "verify failed]",
            "certificate",
        ),
        (
            "connect",
            "connect: Cannot connect to host nope.invalid:80 [Name or service not known]",
            "does not resolve",
        ),
        ("blocked", "blocked: 10.0.0.1 is a private address", "private or reserved"),
        ("reset", "reset: Server disconnected", "connection was cut"),
        ("protocol", "protocol: 400, message: Invalid HTTP", "not valid HTTP"),
    ],
)
def test_network_failures_in_words(error: str, detail: str, expected: str) -> None:
    assert expected in hint(None, error, detail=detail)


def test_the_ssl_mark_of_a_plain_connection_failure_is_not_a_tls_error() -> None:
    # aiohttp writes "ssl:default" into every connection error: only a certificate or SSL error is TLS
    said = hint(
        None,
        "connect",
        detail="connect: Cannot connect to host 127.0.0.1:9 ssl:default [Connect call failed]",
    )
    assert "certificate" not in said
