"""Flask adapter: a view that answers like the ready-made listener (see :mod:`contactsync.listener.adapters`).

``app.add_url_rule("/sync/<token>", view_func=sync_view(on_sync, secret=…), methods=METHODS)``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from flask import Response, json, request

from contactsync.listener.adapters import SyncHandler, respond
from contactsync.listener.library import DEFAULT_LIMITS, Limits

METHODS = ["POST", "GET"]


def _target() -> str:
    """The request target exactly as received, for GET signatures (servers that keep it say so)."""
    environ = request.environ
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/:@&+$,-_.!~*'()%")
    query = environ.get("QUERY_STRING", "")
    return path + ("?" + query if query else "")


def sync_view(
    handler: SyncHandler, *, secret: str | Sequence[str] | None, limits: Limits = DEFAULT_LIMITS
) -> Callable[..., Response]:
    """A Flask view that verifies, parses and passes each sync to ``handler`` (path arguments ignored)."""

    def view(**_path: Any) -> Response:
        if request.content_length is not None and request.content_length > limits.max_body_bytes:
            body = b"\0" * (limits.max_body_bytes + 1)  # refused by parse without reading the stream
        else:
            body = request.get_data(cache=False)
        status, answer = respond(
            handler,
            method=request.method,
            headers=dict(request.headers),
            body=body,
            target=_target(),
            query=request.query_string.decode("latin-1"),
            content_type=request.headers.get("Content-Type", ""),
            secret=secret,
            limits=limits,
        )
        return Response(json.dumps(answer), status=status, mimetype="application/json")

    view.__name__ = f"contactsync_sync_{getattr(handler, '__name__', 'handler')}"
    return view
