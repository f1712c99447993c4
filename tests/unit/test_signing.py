"""Standard Webhooks signing: secrets, interop with the reference library both ways, tolerance edges."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from contactsync.errors import ConfigError, SecretError, SignatureError
from contactsync.wire import signing
from support import examples

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OLD_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 124))).decode()
BODY = b"transactionid=7262734018228486144&contact%5Bid%5D=42&contact%5Bemail%5D=jane%40example.com"
TS = 1_767_225_600


def signed(secrets: list[str], *, ts: int = TS, msg_id: str = "7262734018228486144") -> dict[str, str]:
    return signing.headers(secrets, msg_id=msg_id, timestamp=ts, content=BODY)


# --- secrets -----------------------------------------------------------------------------------------


def test_generate_secret_uses_the_injected_randomness() -> None:
    secret = signing.generate_secret(randbytes=lambda n: b"\x01" * n)
    assert secret == "whsec_" + base64.b64encode(b"\x01" * 32).decode()
    assert signing.parse_secret(secret) == b"\x01" * 32


@pytest.mark.parametrize("nbytes", [24, 32, 64])
def test_generate_secret_sizes(nbytes: int) -> None:
    assert len(signing.parse_secret(signing.generate_secret(nbytes=nbytes))) == nbytes


@pytest.mark.parametrize("nbytes", [0, 23, 65])
def test_generate_secret_refuses_bad_sizes(nbytes: int) -> None:
    with pytest.raises(SecretError, match="24–64 bytes"):
        signing.generate_secret(nbytes=nbytes)


def test_generated_secrets_differ() -> None:
    assert signing.generate_secret() != signing.generate_secret()


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "must start with 'whsec_'"),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec_", "24–64 bytes"),
        ("whsec_not base64!", "base64"),
        ("whsec_" + base64.b64encode(b"x" * 32).decode().rstrip("="), "base64"),  # 43 chars: unpadded
        ("whsec_" + base64.urlsafe_b64encode(b"\xff" * 30).decode(), "base64"),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), "this one has 23"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "this one has 65"),
    ],
)
def test_parse_secret_explains_what_is_wrong(secret: str, message: str) -> None:
    with pytest.raises(SecretError, match=message):
        signing.parse_secret(secret)


def test_secret_errors_are_config_errors_and_do_not_leak_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        signing.parse_secret("supersecretvalue-without-prefix")
    assert "supersecretvalue" not in str(info.value)


# --- signing and verifying -------------------------------------------------------------------------


def test_sign_known_vector() -> None:
    # Standard Webhooks' published example (the reference libraries' tests use it)
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id = "msg_p5jXN8AQM9LWM0D4loKWxJek"
    body = '{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signing.sign(secret, msg_id=msg_id, timestamp=1614265330, content=body) == expected
    assert (
        signing.sign(signing.parse_secret(secret), msg_id=msg_id, timestamp=1614265330, content=body)
        == expected
    )


def test_headers_shape() -> None:
    got = signed([SECRET, OLD_SECRET])
    assert list(got) == ["webhook-id", "webhook-timestamp", "webhook-signature"]
    assert got["webhook-id"] == "7262734018228486144"
    assert got["webhook-timestamp"] == str(TS)
    first, second = got["webhook-signature"].split(" ")
    assert first == signing.sign(SECRET, msg_id="7262734018228486144", timestamp=TS, content=BODY)
    assert second == signing.sign(OLD_SECRET, msg_id="7262734018228486144", timestamp=TS, content=BODY)


def test_str_and_bytes_content_sign_alike() -> None:
    text = "contact%5Bname%5D=Jos%C3%A9 é"
    assert signing.sign(SECRET, msg_id="1", timestamp=TS, content=text) == signing.sign(
        SECRET, msg_id="1", timestamp=TS, content=text.encode()
    )


def test_verify_accepts_and_rejects() -> None:
    hdrs = signed([SECRET])
    signing.verify(hdrs, BODY, SECRET, now=TS)
    signing.verify(hdrs, BODY, [OLD_SECRET, SECRET], now=TS)
    with pytest.raises(SignatureError, match="no signature matches") as info:
        signing.verify(hdrs, BODY + b"&x=1", SECRET, now=TS)
    assert info.value.reason == "no_match"
    with pytest.raises(SignatureError) as info:
        signing.verify(hdrs, BODY, OLD_SECRET, now=TS)
    assert info.value.reason == "no_match"
    with pytest.raises(SignatureError):  # the id is part of what is signed
        signing.verify({**hdrs, "webhook-id": "7262734018228486145"}, BODY, SECRET, now=TS)


def test_parsed_keys_work_like_secrets() -> None:
    key, old_key = signing.parse_secret(SECRET), signing.parse_secret(OLD_SECRET)
    assert signing.headers([key, old_key], msg_id="1", timestamp=TS, content=BODY) == signing.headers(
        [SECRET, OLD_SECRET], msg_id="1", timestamp=TS, content=BODY
    )
    signing.verify(signed([SECRET]), BODY, key, now=TS)
    signing.verify(signed([SECRET]), BODY, [old_key, key], now=TS)


def test_rotation_either_secret_verifies() -> None:
    hdrs = signed([SECRET, OLD_SECRET])
    signing.verify(hdrs, BODY, SECRET, now=TS)
    signing.verify(hdrs, BODY, OLD_SECRET, now=TS)
    signing.verify(hdrs, BODY, [OLD_SECRET], now=TS)


def test_header_names_are_case_insensitive() -> None:
    hdrs = {k.upper() if i % 2 else k.title(): v for i, (k, v) in enumerate(signed([SECRET]).items())}
    signing.verify(hdrs, BODY, SECRET, now=TS)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header(missing: str) -> None:
    hdrs = signed([SECRET])
    del hdrs[missing]
    with pytest.raises(SignatureError, match=missing) as info:
        signing.verify(hdrs, BODY, SECRET, now=TS)
    assert info.value.reason == "missing_header"
    hdrs[missing] = ""
    with pytest.raises(SignatureError) as info:
        signing.verify(hdrs, BODY, SECRET, now=TS)
    assert info.value.reason == "missing_header"


@pytest.mark.parametrize("stamp", ["abc", "-5", "1.5", "1e9", "١٢٣", "9" * 40])
def test_bad_timestamp(stamp: str) -> None:
    hdrs = {**signed([SECRET]), "webhook-timestamp": stamp}
    with pytest.raises(SignatureError) as info:
        signing.verify(hdrs, BODY, SECRET, now=TS)
    assert info.value.reason == "bad_timestamp"


def test_tolerance_edges() -> None:
    hdrs = signed([SECRET])
    signing.verify(hdrs, BODY, SECRET, now=TS + 300)
    signing.verify(hdrs, BODY, SECRET, now=TS - 300)
    signing.verify(hdrs, BODY, SECRET, now=TS + 300.0)
    with pytest.raises(SignatureError, match="old") as info:
        signing.verify(hdrs, BODY, SECRET, now=TS + 300.001)
    assert info.value.reason == "too_old"
    with pytest.raises(SignatureError, match="future") as info:
        signing.verify(hdrs, BODY, SECRET, now=TS - 301)
    assert info.value.reason == "too_new"
    signing.verify(hdrs, BODY, SECRET, now=TS + 3600, tolerance_s=3600)
    with pytest.raises(SignatureError) as info:
        signing.verify(hdrs, BODY, SECRET, now=TS + 1, tolerance_s=0)
    assert info.value.reason == "too_old"


def test_stale_timestamp_is_reported_before_signature() -> None:
    hdrs = {**signed([SECRET]), "webhook-signature": "v1,AAAA"}
    with pytest.raises(SignatureError) as info:
        signing.verify(hdrs, BODY, SECRET, now=TS + 1000)
    assert info.value.reason == "too_old"


def test_unknown_versions_and_garbage_entries_are_ignored() -> None:
    good = signed([SECRET])["webhook-signature"]
    for header in (f"v2,abc {good}", f"v1a,xyz v1,!!notb64 {good}", f"junk v1, {good} v3,zz"):
        signing.verify({**signed([SECRET]), "webhook-signature": header}, BODY, SECRET, now=TS)
    with pytest.raises(SignatureError, match="no v1 signature") as info:
        signing.verify({**signed([SECRET]), "webhook-signature": "v2," + good[3:]}, BODY, SECRET, now=TS)
    assert info.value.reason == "no_match"


def test_signing_needs_a_secret() -> None:
    with pytest.raises(SecretError):
        signing.signature_header([], msg_id="1", timestamp=TS, content=BODY)
    with pytest.raises(SecretError):
        signing.verify(signed([SECRET]), BODY, [], now=TS)


# --- interop with the reference implementation ---------------------------------------------------


def test_reference_library_verifies_ours_including_rotation() -> None:
    now = int(time.time())
    hdrs = signing.headers([SECRET, OLD_SECRET], msg_id="7262734018228486144", timestamp=now, content=BODY)
    Webhook(SECRET).verify(BODY, hdrs, json_parse=False)
    Webhook(OLD_SECRET).verify(BODY, hdrs, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.generate_secret()).verify(BODY, hdrs, json_parse=False)


def test_we_verify_the_reference_librarys_signatures_including_rotation() -> None:
    stamp = datetime.fromtimestamp(TS, tz=UTC)
    body = BODY.decode()
    header = " ".join(Webhook(s).sign("msg_1", stamp, body) for s in (OLD_SECRET, SECRET))
    hdrs = {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(TS), "Webhook-Signature": header}
    signing.verify(hdrs, BODY, SECRET, now=TS)
    signing.verify(hdrs, body, OLD_SECRET, now=TS)
    with pytest.raises(SignatureError):
        signing.verify(hdrs, BODY, signing.generate_secret(), now=TS)


@given(
    body=st.binary(max_size=300).map(lambda b: b.decode("latin-1").encode()),
    msg_id=st.from_regex(r"[A-Za-z0-9_]{1,40}", fullmatch=True),
    ts=st.integers(min_value=0, max_value=2**37),
    nbytes=st.integers(min_value=24, max_value=64),
)
@settings(max_examples=examples(ci=300))
def test_interop_property(body: bytes, msg_id: str, ts: int, nbytes: int) -> None:
    secret = signing.generate_secret(nbytes=nbytes)
    ours = signing.sign(secret, msg_id=msg_id, timestamp=ts, content=body)
    theirs = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=UTC), body.decode())
    assert ours == theirs
    signing.verify(
        {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": theirs},
        body,
        secret,
        now=ts,
    )


# --- GET request targets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "target"),
    [
        (
            "https://example.com/hook?email=jane%40example.com&n=Jos%C3%A9+D",
            "/hook?email=jane%40example.com&n=Jos%C3%A9+D",
        ),
        ("https://example.com", "/"),
        ("https://example.com?a=1", "/?a=1"),
        ("https://example.com/a/b/?", "/a/b/"),
        ("https://user:pw@example.com:8443/p%20q?x=%5B1%5D#frag", "/p%20q?x=%5B1%5D"),
        ("http://[::1]:8080/sync/tok?x=1&&y=", "/sync/tok?x=1&&y="),
    ],
)
def test_request_target(url: str, target: str) -> None:
    assert signing.request_target(url) == target


def test_get_request_is_signed_over_its_target() -> None:
    url = "https://example.com/sync/tok?email=jane%40example.com&id=42"
    target = signing.request_target(url)
    hdrs = signing.headers(SECRET, msg_id="9", timestamp=TS, content=target)
    signing.verify(hdrs, "/sync/tok?email=jane%40example.com&id=42", SECRET, now=TS)
    with pytest.raises(SignatureError):
        signing.verify(hdrs, "/sync/tok?email=jane%40example.com&id=43", SECRET, now=TS)
