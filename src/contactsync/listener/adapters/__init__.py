"""Adapters for Flask, Django and FastAPI: a customer's own app gains a verified, parsed sync endpoint.

All three share :func:`respond`, so they answer exactly like the ready-made listener: 401 on a bad
signature, 413/415/400 on unusable bodies, 422 naming the bad key, 200 once the handler returned.
Unlike the ready-made listener there is no inbox: the handler runs before the 200, and a handler
that raises answers 500 so the platform retries later. Customers who need the durable inbox and
retried handlers run ``contactsync listen`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from contactsync.errors import PayloadError, PHPFormLimitError, RequestError, SignatureError
from contactsync.listener.library import DEFAULT_LIMITS, Limits, error_response, parse, verify
from contactsync.wire.payload import SyncPayload

__all__ = ["SyncHandler", "accept", "handled", "respond"]

SyncHandler = Callable[[SyncPayload], object]
"""The customer's code: receives the validated payload; its return value is ignored."""


def accept(
    *,
    method: str,
    headers: Mapping[str, str],
    body: bytes,
    target: str,
    query: str,
    content_type: str,
    secret: str | Sequence[str] | None,
    limits: Limits = DEFAULT_LIMITS,
    now: float | None = None,
) -> SyncPayload | tuple[int, dict[str, Any]]:
    """Verify and parse one request: the payload, or the HTTP status and JSON body of its refusal."""
    try:
        if secret:
            content = target.encode("latin-1") if method.upper() == "GET" else body
            verify(headers, content, secret, now=now, tolerance_s=limits.tolerance_s)
        return parse(
            body,
            content_type,
            method=method.upper(),
            query=query,
            limits=limits,
            webhook_id=headers.get("webhook-id"),
        )
    except (SignatureError, RequestError, PayloadError, PHPFormLimitError) as exc:
        return error_response(exc)


def handled(payload: SyncPayload, error: Exception | None) -> tuple[int, dict[str, Any]]:
    """The answer once the customer's handler ran: 200, or 500 so that the platform retries."""
    if error is not None:
        return 500, {"error": "handler_failed", "detail": f"{type(error).__name__}: {error}"}
    return 200, {"ok": True, "transactionid": str(payload.transactionid)}


def respond(handler: SyncHandler, **request: Any) -> tuple[int, dict[str, Any]]:
    """:func:`accept` the request, then run ``handler``; the HTTP status and JSON body to answer."""
    accepted = accept(**request)
    if isinstance(accepted, tuple):
        return accepted
    try:
        handler(accepted)
    except Exception as exc:  # the customer's code: any failure means "send it again later"
        return handled(accepted, exc)
    return handled(accepted, None)
