"""Standard Webhooks signatures (https://www.standardwebhooks.com): secrets, signing, verification.

Signed content is ``"{webhook-id}.{webhook-timestamp}.{body}"``, HMAC-SHA256 keyed by the base64-decoded
part of a ``whsec_…`` secret. For GET requests there is no body, so the request target exactly as sent
(``/path?query``, see :func:`request_target`) takes its place. During secret rotation the sender signs
with every active secret (space-separated ``v1,…`` entries) and the receiver accepts any of them.

Pure: the current time comes in as ``now`` (verify) or ``timestamp`` (sign) so tests are deterministic.
Interoperates with the ``standardwebhooks`` reference library in both directions.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets as _secrets
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from hashlib import sha256
from typing import Any
from urllib.parse import urlsplit

from contactsync.errors import SecretError, SignatureError

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "HEADER_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "SECRET_PREFIX",
    "generate_secret",
    "headers",
    "parse_secret",
    "request_target",
    "sign",
    "signature_header",
    "verify",
]

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_TOLERANCE_S = 300
HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_MAX_TIMESTAMP_DIGITS = 15
_MAX_SIGNATURES = 32  # entries looked at per header; a sender rotates between two secrets, not hundreds

Secret = str | bytes
"""A ``whsec_…`` string, or the key bytes :func:`parse_secret` returned (no re-parsing on hot paths)."""


def generate_secret(*, nbytes: int = 32, randbytes: Callable[[int], bytes] = _secrets.token_bytes) -> str:
    """A new secret: ``whsec_`` + base64 of ``nbytes`` (24–64) random bytes."""
    if not MIN_SECRET_BYTES <= nbytes <= MAX_SECRET_BYTES:
        raise SecretError(f"a secret must have {MIN_SECRET_BYTES}–{MAX_SECRET_BYTES} bytes, got {nbytes}")
    raw = randbytes(nbytes)
    if len(raw) != nbytes:
        raise SecretError(f"random source returned {len(raw)} bytes instead of {nbytes}")
    return SECRET_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_secret(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_…`` secret.

    A malformed secret raises :class:`~contactsync.errors.SecretError` saying what is wrong.
    """
    if not isinstance(secret, str):
        raise SecretError(f"a secret must be a string, got {type(secret).__name__}")
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError(f"a secret must start with {SECRET_PREFIX!r} (it looks like {_redact(secret)})")
    encoded = secret[len(SECRET_PREFIX) :]
    if not encoded.isascii() or _B64.fullmatch(encoded) is None or len(encoded) % 4:
        raise SecretError(f"the part after {SECRET_PREFIX!r} is not standard, padded base64")
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:  # pragma: no cover - the regex above already rules this out
        raise SecretError(f"the part after {SECRET_PREFIX!r} is not valid base64") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise SecretError(
            f"a secret must decode to {MIN_SECRET_BYTES}–{MAX_SECRET_BYTES} bytes, this one has {len(key)}"
        )
    return key


def _redact(secret: str) -> str:
    """Enough of a secret to recognise it in an error message, never the whole of it."""
    return repr(secret[:6] + "…") if len(secret) > 6 else "a short string"


def _key(secret: Secret) -> bytes:
    return secret if isinstance(secret, bytes) else parse_secret(secret)


def _as_bytes(content: bytes | str) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


def _digest(key: bytes, msg_id: str, timestamp: str, content: bytes) -> bytes:
    signed = b"%s.%s.%s" % (msg_id.encode("utf-8"), timestamp.encode("ascii"), content)
    return hmac.digest(key, signed, "sha256")  # one-shot in OpenSSL: no HMAC object per request


def sign(secret: Secret, *, msg_id: str, timestamp: int, content: bytes | str) -> str:
    """One signature, ``v1,<base64>``, of ``content`` sent as message ``msg_id`` at ``timestamp`` (Unix s)."""
    digest = _digest(_key(secret), msg_id, str(int(timestamp)), _as_bytes(content))
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Sequence[Secret], *, msg_id: str, timestamp: int, content: bytes | str) -> str:
    """The ``webhook-signature`` value: one ``v1,…`` per secret (two while a secret is being rotated)."""
    if isinstance(secrets, str | bytes):
        secrets = [secrets]
    if not secrets:
        raise SecretError("at least one secret is needed to sign")
    return _signatures(secrets, msg_id, str(int(timestamp)), _as_bytes(content))


def _signatures(secrets: Sequence[Secret], msg_id: str, stamp: str, body: bytes) -> str:
    """``v1,<base64>`` per secret, space-separated; the signed bytes are built once for all of them."""
    signed = b"%s.%s.%s" % (msg_id.encode("utf-8"), stamp.encode("ascii"), body)
    return " ".join(
        "v1," + binascii.b2a_base64(_keyed_sha256(_key(s), signed), newline=False).decode("ascii")
        for s in secrets
    )


_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


@lru_cache(maxsize=1024)
def _pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after the key's inner and outer pads (RFC 2104), computed once per key."""
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return sha256(key.translate(_IPAD)), sha256(key.translate(_OPAD))


def _keyed_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` from the key's cached pad states: two hash copies per signature,
    where OpenSSL 3's one-shot HMAC looks the digest up again on every call (~3x slower here)."""
    inner_pad, outer_pad = _pads(key)
    inner = inner_pad.copy()
    inner.update(message)
    outer = outer_pad.copy()
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


def headers(
    secrets: Secret | Sequence[Secret], *, msg_id: str, timestamp: int, content: bytes | str
) -> dict[str, str]:
    """The three ``webhook-*`` headers for one attempt (only timestamp and signature change on retry)."""
    listed = [secrets] if isinstance(secrets, str | bytes) else secrets
    if not listed:
        raise SecretError("at least one secret is needed to sign")
    stamp = str(int(timestamp))
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: stamp,
        HEADER_SIGNATURE: _signatures(listed, msg_id, stamp, _as_bytes(content)),
    }


def request_target(url: str) -> str:
    """What a GET request signs in place of a body: ``/path?query`` exactly as it goes on the wire.

    The fragment is never sent, an empty path is sent as ``/``, and a bare ``?`` with no query is dropped
    (HTTP clients and ASGI servers drop it too). Percent-encoding is kept as written: the sender must send
    the URL without re-quoting it (aiohttp: ``yarl.URL(url, encoded=True)``) and the receiver must
    rebuild the target from the raw path and query string, not the decoded ones.
    """
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return target


def verify(
    headers: Mapping[str, str],
    content: bytes | str,
    secrets: Secret | Sequence[Secret],
    *,
    now: float,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    lowercase: bool = False,
) -> None:
    """Accept a request signed with any of ``secrets`` within ``tolerance_s`` of ``now``, or raise.

    Raises :class:`~contactsync.errors.SignatureError` whose ``reason`` is ``missing_header``,
    ``bad_timestamp``, ``too_old``, ``too_new`` or ``no_match``. Header names are case-insensitive;
    signature versions other than ``v1`` are ignored; digests are compared in constant time.
    ``lowercase=True`` says every name in ``headers`` already is (ASGI's), so they are not copied.
    """
    found = headers if lowercase else {name.lower(): value for name, value in headers.items()}
    msg_id = found.get(HEADER_ID)
    stamp = found.get(HEADER_TIMESTAMP)
    signatures = found.get(HEADER_SIGNATURE)
    if not (msg_id and stamp and signatures):
        missing = [h for h in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE) if not found.get(h)]
        raise SignatureError(f"missing header(s): {', '.join(missing)}", reason="missing_header")
    stamp = stamp.strip()
    if not (stamp.isdigit() and stamp.isascii() and len(stamp) <= _MAX_TIMESTAMP_DIGITS):
        raise SignatureError(
            f"{HEADER_TIMESTAMP} must be Unix seconds as digits, got {stamp[:32]!r}", reason="bad_timestamp"
        )
    age_s = now - int(stamp)
    if age_s > tolerance_s:
        raise SignatureError(
            f"{HEADER_TIMESTAMP} is {age_s:.0f} s old, more than the {tolerance_s} s allowed",
            reason="too_old",
        )
    if -age_s > tolerance_s:
        raise SignatureError(
            f"{HEADER_TIMESTAMP} is {-age_s:.0f} s in the future, more than the {tolerance_s} s allowed",
            reason="too_new",
        )
    offered = _offered_v1(signatures)
    if not offered:
        raise SignatureError(f"{HEADER_SIGNATURE} holds no v1 signature", reason="no_match")
    listed = [secrets] if isinstance(secrets, str | bytes) else secrets
    if not listed:
        raise SecretError("at least one secret is needed to verify")
    signed = b"%s.%s.%s" % (msg_id.encode("utf-8"), stamp.encode("ascii"), _as_bytes(content))
    matched = False
    for secret in listed:
        expected = _keyed_sha256(_key(secret), signed)
        for candidate in offered:
            # no early exit: the time taken does not depend on which entry matched
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no signature matches any of the configured secrets", reason="no_match")


def _offered_v1(header: str) -> list[bytes]:
    """The decoded ``v1`` digests of a signature header; malformed and other-version entries are skipped."""
    offered: list[bytes] = []
    for entry in header.split(" ")[:_MAX_SIGNATURES]:
        version, comma, encoded = entry.partition(",")
        if version != "v1" or not comma or not encoded.isascii():
            continue
        try:
            offered.append(base64.b64decode(encoded, validate=True))
        except binascii.Error:
            continue
    return offered
