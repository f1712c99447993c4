"""Django adapter: ``path("sync/<str:token>", sync_view(on_sync, secret=…))`` in ``urlpatterns``."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]
from django.views.decorators.csrf import csrf_exempt  # type: ignore[import-untyped]

from contactsync.listener.adapters import SyncHandler, respond
from contactsync.listener.library import DEFAULT_LIMITS, Limits


def _target(request: Any) -> str:
    meta = request.META
    raw = meta.get("RAW_URI") or meta.get("REQUEST_URI")
    return str(raw) if raw else str(request.get_full_path())


def sync_view(
    handler: SyncHandler, *, secret: str | Sequence[str] | None, limits: Limits = DEFAULT_LIMITS
) -> Callable[..., Any]:
    """A CSRF-exempt Django view that verifies, parses and passes each sync to ``handler``."""

    def view(request: HttpRequest, *_args: Any, **_kwargs: Any) -> Any:
        if request.method not in ("POST", "GET"):
            return HttpResponse(
                json.dumps({"error": "method_not_allowed", "detail": "use POST or GET"}),
                status=405,
                content_type="application/json",
            )
        length = request.META.get("CONTENT_LENGTH") or "0"
        too_big = length.isdigit() and int(length) > limits.max_body_bytes
        body = b"\0" * (limits.max_body_bytes + 1) if too_big else request.body
        status, answer = respond(
            handler,
            method=request.method,
            headers=dict(request.headers),
            body=body,
            target=_target(request),
            query=request.META.get("QUERY_STRING", ""),
            content_type=request.META.get("CONTENT_TYPE", ""),
            secret=secret,
            limits=limits,
        )
        return HttpResponse(json.dumps(answer), status=status, content_type="application/json")

    exempt: Callable[..., Any] = csrf_exempt(view)
    return exempt
