"""Request-size guard: refuse oversized bodies by their declared length before anything reads them.

Bodies sent without a length (chunked) are counted as they stream; past the limit reading fails with
:class:`~contactsync.api.errors.ApiError` (413), which FastAPI reports as an unparsable body (400) on
JSON routes — never a truncated body taken for a whole one.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contactsync.api.errors import ApiError

MAX_BODY_BYTES = 10 * 1024 * 1024
IMPORT_MAX_BODY_BYTES = 20 * 1024 * 1024


class BodyLimit:
    """ASGI middleware: 413 for a declared ``Content-Length`` over the limit of the request's path."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES, import_max_bytes: int = IMPORT_MAX_BODY_BYTES
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.import_max_bytes = import_max_bytes

    def _limit(self, path: str) -> int:
        return self.import_max_bytes if path.endswith("/contacts/import") else self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(str(scope.get("path", "")))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _too_large(send, limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ApiError(413, "too_large", f"the request body is over {limit} bytes", field="body")
            return message

        await self.app(scope, counted, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "error": "too_large",
            "message": f"the request body is over {limit} bytes",
            "field": "body",
            "errors": [],
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
