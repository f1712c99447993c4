"""The listener as a library: ``verify`` and ``parse`` for customers who keep their own web app.

The ready-made app and the Flask/Django/FastAPI adapters use exactly these two functions, so a
body accepted by one is accepted by all. Refusals are exceptions of the package tree, each with
the HTTP status a listener should answer (:func:`error_response` builds the JSON body):

* :class:`~contactsync.errors.SignatureError` → 401
* :class:`~contactsync.errors.RequestError` → its ``status`` (413 too large, 415 content type,
  400 invalid UTF-8 or JSON)
* :class:`~contactsync.errors.PHPFormLimitError` → 413 (variables) or 400 (nesting), on every
  content type, with the ``path`` of the offending key
* :class:`~contactsync.errors.PayloadError` → 422 with the path of the bad key
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

from contactsync.errors import (
    ContactSyncError,
    PayloadError,
    PHPFormLimitError,
    RequestError,
    SignatureError,
)
from contactsync.listener import getmap
from contactsync.wire import jsonbody, phpform, signing
from contactsync.wire import transactionid as txid
from contactsync.wire.payload import SyncPayload

__all__ = ["Limits", "Parsed", "error_response", "parse", "parse_request", "secret_keys", "verify"]

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Limits:
    """What a listener accepts (listener.md defaults: 5 MB, 100,000 variables, nesting 64)."""

    max_body_bytes: int = 5 * 1024 * 1024
    max_input_vars: int = 100_000
    max_nesting: int = 64
    tolerance_s: int = signing.DEFAULT_TOLERANCE_S


DEFAULT_LIMITS = Limits()


def secret_keys(secret: str | Sequence[str]) -> list[bytes]:
    """HMAC keys of one ``whsec_…`` secret, several separated by spaces or commas (rotation), or a list."""
    listed = secret.replace(",", " ").split() if isinstance(secret, str) else list(secret)
    return [signing.parse_secret(s) for s in listed]


def verify(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | Sequence[str] | Sequence[bytes],
    *,
    now: float | None = None,
    tolerance_s: int = signing.DEFAULT_TOLERANCE_S,
) -> None:
    """Raise :class:`SignatureError` unless ``body`` carries a fresh signature by ``secret``.

    ``body`` is the raw POST body, or for GET the request target exactly as received (``/path?query``).
    ``secret`` may be a ``whsec_…`` string (several separated by spaces during rotation), a list of
    them, or keys from :func:`secret_keys` (which skips re-parsing on a hot path).
    """
    if isinstance(secret, str):
        keys: Sequence[str | bytes] = secret_keys(secret)
    else:
        keys = list(secret)
    if not keys:
        raise SignatureError("no secret is configured to verify with", reason="no_match")
    signing.verify(headers, body, keys, now=time.time() if now is None else now, tolerance_s=tolerance_s)


_HIGH_ESCAPE = re.compile(rb"%[89a-fA-F][0-9a-fA-F]")


def _check_utf8(raw: bytes, what: str = "body") -> None:
    """Form and query bytes, once percent-decoded, must be UTF-8: PHP would not notice, our database would."""
    if raw.isascii() and _HIGH_ESCAPE.search(raw) is None:
        return  # the common case, checked at C speed: no byte above 0x7F, raw or escaped
    decoded = unquote_to_bytes(raw.replace(b"+", b" ")) if b"%" in raw else raw
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            f"the {what} is not valid UTF-8 once percent-decoded (byte {exc.start})",
            status=400,
            code="invalid_utf8",
        ) from None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _raw(text: bytes | str, *, latin: bool = False) -> bytes:
    """Bytes of a body or query handed over as text; a lone surrogate in it stays visible, never raises."""
    if isinstance(text, bytes):
        return text
    if latin and not text.isascii():
        try:
            return text.encode("latin-1")  # how ASGI servers hand over a query string
        except UnicodeEncodeError:
            pass
    return text.encode("utf-8", "surrogatepass")


def _json(data: bytes, limits: Limits) -> dict[str, Any]:
    """A JSON body as a dict, held to the form path's limits and to real Unicode text (wire/jsonbody)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            f"the JSON body is not valid UTF-8 (byte {exc.start})", status=400, code="invalid_utf8"
        ) from None
    try:
        decoded = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise jsonbody.too_deep(data, max_nesting=limits.max_nesting) from None
    except ValueError as exc:
        raise RequestError(f"the body is not valid JSON: {exc}", status=400, code="invalid_json") from None
    if not isinstance(decoded, dict):
        raise PayloadError(f"the JSON body must be an object, got {type(decoded).__name__}", path="")
    jsonbody.check_limits(
        decoded,
        size_bytes=len(data),
        max_input_vars=limits.max_input_vars,
        max_nesting=limits.max_nesting,
    )
    broken = jsonbody.lone_surrogate(decoded, data)
    if broken is not None:
        raise RequestError(
            f"{broken} holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape without its "
            "pair), which is not text and cannot be stored as UTF-8",
            status=400,
            code="invalid_utf8",
        )
    return decoded


class Parsed(NamedTuple):
    """A request's payload and its inbox key: the transactionid, or for a GET without one its own key.

    A tuple, not a dataclass: the request path builds one per request.
    """

    payload: SyncPayload | None
    """``None`` when asked only to check it (``parse_request(model=False)``): the request path
    acknowledges a valid request, and the handlers rebuild the model from the inbox."""
    key: str
    transactionid: int
    deduplicable: bool = True


def parse(
    body: bytes | str,
    content_type: str = FORM,
    *,
    method: str = "POST",
    query: bytes | str = "",
    limits: Limits = DEFAULT_LIMITS,
    webhook_id: str | None = None,
    received_at_ms: int | None = None,
    get_mapping: Mapping[str, str] | None = None,
) -> SyncPayload:
    """Decode and validate one request into a :class:`SyncPayload` (``query`` without ``?``, for GET).

    Every encoding obeys the same rules: the variable and nesting limits, and UTF-8 text (invalid
    bytes, or a lone surrogate escaped in JSON, answer 400 ``invalid_utf8``). A GET without a
    ``transactionid`` is the customer's own parameters: ``get_mapping`` places them (see
    :mod:`contactsync.listener.getmap`) and ``webhook_id`` keys and orders it.
    """
    payload = parse_request(
        body,
        content_type,
        method=method,
        query=query,
        limits=limits,
        webhook_id=webhook_id,
        received_at_ms=received_at_ms,
        get_mapping=get_mapping,
    ).payload
    if payload is None:  # pragma: no cover - parse_request builds the model unless told not to
        raise AssertionError("parse_request returned no model")
    return payload


def parse_request(
    body: bytes | str,
    content_type: str = FORM,
    *,
    method: str = "POST",
    query: bytes | str = "",
    limits: Limits = DEFAULT_LIMITS,
    webhook_id: str | None = None,
    received_at_ms: int | None = None,
    get_mapping: Mapping[str, str] | None = None,
    model: bool = True,
) -> Parsed:
    """:func:`parse`, with the key the inbox stores the request under.

    ``model=False`` only checks that a POST body validates (the same acceptance and errors) and leaves
    ``payload`` empty: building the model is most of the validation's cost, and the acknowledgement
    does not need it.
    """
    if method.upper() == "GET":
        raw = _raw(query, latin=True)
        _check_utf8(raw, "query")
        params = phpform.decode(
            raw,
            source="get",
            max_input_vars=limits.max_input_vars,
            max_nesting=limits.max_nesting,
            on_limit="raise",
        )
        if not getmap.is_plain(params):
            payload = SyncPayload.from_wire(params)
            return Parsed(payload, str(payload.transactionid), payload.transactionid)
        key, deduplicable = getmap.key_for(webhook_id)
        when = txid.wall_clock_ms() if received_at_ms is None else received_at_ms
        plain = getmap.plain_payload(params, key=key, received_at_ms=when, mapping=get_mapping or {})
        return Parsed(plain, key, plain.transactionid, deduplicable)
    data = _raw(body)
    if len(data) > limits.max_body_bytes:
        raise RequestError(
            f"the body has {len(data)} bytes, more than the {limits.max_body_bytes} allowed",
            status=413,
            code="body_too_large",
        )
    media = content_type.partition(";")[0].strip().lower()
    if media in ("", FORM):
        _check_utf8(data)
        decoded: Mapping[Any, Any] = phpform.decode(
            data,
            source="post",
            max_input_vars=limits.max_input_vars,
            max_nesting=limits.max_nesting,
            on_limit="raise",
        )
    elif media == JSON or media.endswith("+json"):
        decoded = _json(data, limits)
    else:
        raise RequestError(
            f"content type {media!r} is not accepted; send {FORM} or {JSON}",
            status=415,
            code="unsupported_content_type",
        )
    if not model:
        tid = SyncPayload.check_wire(decoded)
        return Parsed(None, str(tid), tid)
    payload = SyncPayload.from_wire(decoded)
    return Parsed(payload, str(payload.transactionid), payload.transactionid)


REASONS = {
    "body_too_large": "too_large",
    "unsupported_content_type": "content_type",
    "invalid_utf8": "encoding",
    "invalid_json": "encoding",
}
"""Metric label (``rejected{reason=…}``) of each :class:`RequestError` code."""


def error_response(exc: ContactSyncError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body a listener answers for a refused request."""
    if isinstance(exc, SignatureError):
        return 401, {"error": "signature", "reason": exc.reason, "detail": str(exc)}
    if isinstance(exc, PHPFormLimitError):
        status = 413 if exc.limit == "max_input_vars" else 400
        return status, {
            "error": exc.limit,
            "path": exc.path,
            "detail": str(exc),
            "value": exc.value,
            "maximum": exc.maximum,
        }
    if isinstance(exc, RequestError):
        return exc.status, {"error": exc.code, "detail": str(exc)}
    if isinstance(exc, PayloadError):
        return 422, {"error": "invalid_payload", "path": exc.path, "detail": str(exc)}
    return 400, {"error": "bad_request", "detail": str(exc)}
