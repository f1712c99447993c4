"""FastAPI adapter: ``app.include_router(sync_router("/sync/{token}", on_sync, secret=…))``.

The handler may be ``async``; a plain function runs in the thread pool so it cannot block the loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from contactsync.listener.adapters import accept, handled
from contactsync.listener.library import DEFAULT_LIMITS, Limits
from contactsync.wire.payload import SyncPayload

AsyncOrSyncHandler = Callable[[SyncPayload], Awaitable[object] | object]


def sync_endpoint(
    handler: AsyncOrSyncHandler, *, secret: str | Sequence[str] | None, limits: Limits = DEFAULT_LIMITS
) -> Callable[[Request], Awaitable[JSONResponse]]:
    """An endpoint (Starlette or FastAPI) that verifies, parses and passes each sync to ``handler``."""

    async def endpoint(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            body = b"\0" * (limits.max_body_bytes + 1)
        else:
            body = await request.body()
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"").decode("latin-1")
        accepted = accept(
            method=request.method,
            headers=dict(request.headers),
            body=body,
            target=raw_path.decode("latin-1") + ("?" + query if query else ""),
            query=query,
            content_type=request.headers.get("content-type", ""),
            secret=secret,
            limits=limits,
        )
        if isinstance(accepted, tuple):
            status, answer = accepted
            return JSONResponse(answer, status_code=status)
        error: Exception | None = None
        try:
            result = (
                handler(accepted)
                if inspect.iscoroutinefunction(handler)
                else await run_in_threadpool(handler, accepted)
            )
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # the customer's code: any failure means "send it again later"
            error = exc
        status, answer = handled(accepted, error)
        return JSONResponse(answer, status_code=status)

    return endpoint


def sync_router(
    path: str,
    handler: AsyncOrSyncHandler,
    *,
    secret: str | Sequence[str] | None,
    limits: Limits = DEFAULT_LIMITS,
) -> APIRouter:
    """A router serving ``path`` (GET and POST) with :func:`sync_endpoint`; hidden from the OpenAPI schema."""
    router = APIRouter()
    router.add_api_route(
        path,
        sync_endpoint(handler, secret=secret, limits=limits),
        methods=["POST", "GET"],
        include_in_schema=False,
    )
    return router
