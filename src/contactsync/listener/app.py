"""The listener's ASGI app: private path → allow-list → size → signature → decode → validate → store → 200.

Nothing is acknowledged before its inbox row is committed (group commit, see ``inbox``); handlers
run afterwards in their own workers. Every refusal is a small JSON object with an ``error`` code
and a human ``detail``, counted by reason, and never stored. Every unknown path, wrong token or
address outside the allow-list gets the same bare 404, so a scanner learns nothing.

The health and metrics endpoints live under the private path too (``/sync/<token>/health`` and
``/sync/<token>/metrics``) for the same reason.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pydantic_core
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from contactsync.db.backend import backend_of
from contactsync.db.engine import create_engine
from contactsync.db.migrate import upgrade
from contactsync.db.retention import Retention
from contactsync.db.sealing import keyring_from_settings
from contactsync.delivery.retry import DEFAULT_SCHEDULE_S
from contactsync.errors import (
    ConfigError,
    PayloadError,
    PHPFormLimitError,
    RequestError,
    SignatureError,
    StorageError,
)
from contactsync.listener.crm import forwarders
from contactsync.listener.getmap import check_mapping
from contactsync.listener.handlers import Handler, Run, Runner, close_handlers, load_handler
from contactsync.listener.inbox import Inbox, InboxEntry
from contactsync.listener.library import (
    REASONS,
    Limits,
    Parsed,
    error_response,
    parse,
    parse_request,
)
from contactsync.listener.liveness import backlog, report
from contactsync.listener.metrics import ListenerMetrics
from contactsync.listener.projection import Projection
from contactsync.listener.refusals import RefusalLog
from contactsync.listener.secrets import SecretBook
from contactsync.settings import Settings
from contactsync.wire import sender, signing
from contactsync.wire.payload import SyncPayload

MIN_TOKEN_CHARS = 32
STORED_HEADERS = frozenset(
    {
        "content-type", "content-length", "user-agent",
        "webhook-id", "webhook-timestamp", "webhook-signature",
        sender.HEADER_ACTION.lower(), sender.HEADER_ACTION_NAME.lower(),
    }
)  # fmt: skip
"""Headers kept with each inbox entry: what a replay or an audit needs, not cookies or proxies' noise
(the sender's action headers name the automation that sent it, for display)."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _json(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(), status, headers, media_type="application/json"
    )


NOT_FOUND = b'{"error":"not_found"}'
ACCEPTED = b'{"ok":true,"duplicate":false,"transactionid":"%d"}'
DUPLICATE = b'{"ok":true,"duplicate":true,"transactionid":"%d"}'


def _not_found() -> Response:
    return Response(NOT_FOUND, 404, media_type="application/json")


@dataclass
class _State:
    settings: Settings
    token: bytes
    book: SecretBook
    refused: RefusalLog
    networks: tuple[Network, ...]
    limits: Limits
    metrics: ListenerMetrics
    inbox: Inbox
    clock_s: Callable[[], float]
    get_mapping: dict[str, str]
    engine: sa.Engine
    handler_names: list[str]
    runner: Runner | None  # None when another process runs the handlers


def _networks(entries: Sequence[str]) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())
    except ValueError as exc:
        raise ConfigError(f"listener_allowed_ips: {exc}") from exc


def _allowed(networks: tuple[Network, ...], host: str | None) -> bool:
    if not networks:
        return True
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


def build_handlers(
    settings: Settings, *, clock_ms: Callable[[], int], write_lock: threading.Lock | None = None
) -> dict[str, Handler]:
    """The handlers ``settings`` asks for: the SQL projection (unless disabled), the named ones, the CRMs."""
    handlers: dict[str, Handler] = {}
    projection: Projection | None = None
    if settings.listener_projection:
        url = settings.listener_projection_url or settings.listener_database_url
        shared = url == settings.listener_database_url
        projection = Projection(url, clock_ms=clock_ms, write_lock=write_lock if shared else None)
        handlers[Projection.name] = projection
    for spec in settings.listener_handlers:
        handlers[spec] = load_handler(spec)
    for forwarder in forwarders(settings.listener_crm, state=projection.converged if projection else None):
        handlers[forwarder.name] = forwarder
    return handlers


def limits_of(settings: Settings) -> Limits:
    """The request limits ``settings`` set (the same for the request path and the handlers)."""
    return Limits(
        max_body_bytes=settings.listener_max_body_bytes,
        max_input_vars=settings.listener_max_input_vars,
        max_nesting=settings.listener_max_nesting,
        tolerance_s=settings.listener_tolerance_s,
    )


def stored_parser(limits: Limits, get_mapping: Mapping[str, str]) -> Callable[[Run], SyncPayload]:
    """How handlers rebuild a payload from its inbox entry: the request path's decoder, limits and mapping."""

    def parse_stored(run: Run) -> SyncPayload:
        return parse(
            run.body,
            run.content_type,
            method=run.method,
            query=run.query,
            limits=limits,
            webhook_id=run.transactionid,
            received_at_ms=run.received_at_ms,
            get_mapping=get_mapping,
        )

    return parse_stored


def create_app(
    settings: Settings,
    *,
    handlers: Mapping[str, Handler] | None = None,
    clock_s: Callable[[], float] = time.time,
    schedule_s: Sequence[float] = DEFAULT_SCHEDULE_S,
    poll_interval_s: float = 1.0,
) -> ListenerApp:
    """The listener app for ``settings``; ``handlers`` replaces the ones the settings name."""
    if len(settings.listener_token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"listener_token must have at least {MIN_TOKEN_CHARS} characters")
    book = SecretBook(
        settings.listener_secret,
        lambda: keyring_from_settings(settings, database_url=settings.listener_database_url),
    )
    refused = RefusalLog()
    networks = _networks(settings.listener_allowed_ips)
    get_mapping = check_mapping(settings.listener_get_mapping)
    limits = limits_of(settings)
    closers: list[Callable[[], None]] = []  # what faces mounted here close when the listener stops

    def clock_ms() -> int:
        return int(clock_s() * 1000)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = inbox_engine(settings.listener_database_url)
        upgrade(engine, side="listener")
        # SQLite has one writer: the inbox, the runners and a projection into the same file take turns
        # on this lock, so none of them sleeps in SQLite's busy-timeout backoff while another commits.
        write_lock = threading.Lock() if backend_of(engine).single_writer else None
        chosen = (
            dict(handlers)
            if handlers is not None
            else build_handlers(settings, clock_ms=clock_ms, write_lock=write_lock)
        )
        metrics = ListenerMetrics(engine, clock_s=clock_s)
        runner = Runner(
            engine,
            chosen,
            parse=stored_parser(limits, get_mapping),
            schedule_s=schedule_s,
            poll_interval_s=poll_interval_s,
            lease_s=settings.listener_handler_lease_s,
            clock_ms=clock_ms,
            on_result=metrics.handler_result,
            write_lock=write_lock,
            yield_to=lambda: inbox.busy(),
            stall_s=settings.listener_handler_stall_s,
            retention=Retention.from_settings(settings),
            retention_interval_s=settings.retention_interval_s,
        )

        def committed(stored: int) -> None:
            metrics.batch_size.observe(stored)
            runner.wake()

        inbox = Inbox(engine, handler_names=list(chosen), on_commit=committed, write_lock=write_lock)
        book.load(engine, now_ms=clock_ms())
        stop = asyncio.Event()
        chores = [
            asyncio.create_task(book.watch(engine, stop, clock_ms)),
            asyncio.create_task(refused.run(engine, stop, lock=write_lock)),
        ]
        inbox.start()
        if settings.listener_run_handlers:
            runner.start()
        app.state.listener = _State(
            settings,
            settings.listener_token.encode(),
            book,
            refused,
            networks,
            limits,
            metrics,
            inbox,
            clock_s,
            get_mapping,
            engine,
            list(chosen),
            runner if settings.listener_run_handlers else None,
        )
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*chores)
            await runner.stop()
            await inbox.close()
            await close_handlers(chosen)
            engine.dispose()
            for close in closers:
                close()

    async def not_found(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            return _json(405, {"error": "method_not_allowed", "detail": "use POST or GET"})
        return _not_found()

    routes: list[BaseRoute] = [
        Route("/sync/{token}/health", _health, methods=["GET"]),
        Route("/sync/{token}/metrics", _metrics, methods=["GET"]),
    ]
    inner = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found}, lifespan=lifespan)
    return ListenerApp(inner, settings.listener_token, secret_book=book, closers=closers)


def _reason(exc: Exception) -> str:
    if isinstance(exc, SignatureError):
        return "signature"
    if isinstance(exc, RequestError):
        return REASONS.get(exc.code, "payload")
    if isinstance(exc, PHPFormLimitError):
        return "limit"
    return "payload"


def inbox_engine(url: str) -> sa.Engine:
    """The inbox's engine: on SQLite every commit is fsynced (``synchronous=FULL``), not just checkpoints."""
    return create_engine(url, sync_every_commit=True)


def _guard(request: Request) -> _State | None:
    state: _State = request.app.state.listener
    token = request.path_params["token"].encode()
    if not hmac.compare_digest(token, state.token):
        state.metrics.reject("not_found")
        return None
    client = request.client
    if not _allowed(state.networks, client.host if client else None):
        state.metrics.reject("ip")
        return None
    return state


async def _health(request: Request) -> Response:
    """503 while a handler worker here is stalled; each handler's backlog and lag either way."""
    state = _guard(request)
    if state is None:
        return _not_found()
    try:
        pending = await asyncio.to_thread(backlog, state.engine)
    except sa.exc.SQLAlchemyError:
        pending = None
    runner = state.runner
    healthy, handlers = report(
        state.handler_names,
        workers=runner.workers() if runner is not None else None,
        pending=pending,
        now_s=runner.monotonic() if runner is not None else 0.0,
        now_ms=int(state.clock_s() * 1000),
        stall_s=state.settings.listener_handler_stall_s,
    )
    body = {"ok": healthy, "commits": state.inbox.commits, "handlers": handlers}
    return _json(200 if healthy else 503, body)


async def _metrics(request: Request) -> Response:
    state = _guard(request)
    if state is None:
        return _not_found()
    return Response(state.metrics.render(), 200, media_type="text/plain; version=0.0.4")


def _dumps(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


async def _read_body(receive: Receive, declared: str, max_bytes: int) -> bytes | None:
    """The whole body, or ``None`` as soon as it is known to exceed ``max_bytes`` (never buffered)."""
    if declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # the client went away
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_KEPT = frozenset(name.encode() for name in STORED_HEADERS)


def _kept_headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """The stored headers, which are also all the request path reads (ASGI names are lower case)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in raw if name in _KEPT}


async def _sync(
    state: _State, scope: Scope, receive: Receive
) -> tuple[int, bytes, tuple[bytes, bytes] | None]:
    """One request on the private path: (status, JSON body, extra header)."""
    metrics = state.metrics
    client = scope.get("client")
    host = client[0] if client else None
    headers = _kept_headers(scope["headers"])
    if state.networks and not _allowed(state.networks, host):
        metrics.reject("ip")
        _refused(state, "ip", 404, host, headers)
        return 404, NOT_FOUND, None
    method = scope["method"]
    if method not in ("POST", "GET"):
        metrics.reject("method")
        _refused(state, "method", 405, host, headers)
        return 405, _dumps({"error": "method_not_allowed", "detail": "use POST or GET"}), None
    limits = state.limits
    query = scope["query_string"].decode("latin-1") if scope.get("query_string") else ""
    if method == "POST":
        body = await _read_body(receive, headers.get("content-length", ""), limits.max_body_bytes)
        if body is None:
            metrics.reject("too_large")
            _refused(state, "body_too_large", 413, host, headers)
            detail = f"the body exceeds {limits.max_body_bytes} bytes"
            return 413, _dumps({"error": "body_too_large", "detail": detail}), None
        content = body
    else:
        body = b""
        raw_path = scope.get("raw_path") or scope["path"].encode()
        content = raw_path + (b"?" + query.encode("latin-1") if query else b"")
    content_type = headers.get("content-type", "")
    now_s = state.clock_s()
    now_ms = int(now_s * 1000)
    keys = state.book.keys
    try:
        if keys:
            signing.verify(headers, content, keys, now=now_s, tolerance_s=limits.tolerance_s, lowercase=True)
        parsed = parse_request(
            body,
            content_type,
            method=method,
            query=query,
            limits=limits,
            webhook_id=headers.get("webhook-id"),
            received_at_ms=now_ms,
            get_mapping=state.get_mapping,
            model=False,
        )
    except (SignatureError, RequestError, PayloadError, PHPFormLimitError) as exc:
        metrics.reject(_reason(exc))
        status, answer = error_response(exc)
        signed = not isinstance(exc, SignatureError) and bool(keys)
        label = (
            state.book.label_of(headers, content, now=now_s, tolerance_s=limits.tolerance_s) if signed else ""
        )
        _refused(state, answer.get("reason") or answer["error"], status, host, headers, label=label)
        return status, _dumps(answer), None
    entry = InboxEntry(
        transactionid=parsed.key,
        received_at_ms=now_ms,
        method=method,
        content_type=content_type,
        query=query,
        headers=pydantic_core.to_json(headers).decode(),
        body=body,
        source_address=host or "",
        deduplicable=parsed.deduplicable,
    )
    try:
        stored = await state.inbox.store(entry)
    except StorageError:
        metrics.reject("storage")
        _refused(state, "storage", 503, host, headers)
        answer = {"error": "storage_unavailable", "detail": "not stored; retry later"}
        return 503, _dumps(answer), (b"retry-after", b"5")
    tid = parsed.transactionid
    if stored.duplicate:
        metrics.duplicate()
        return 200, DUPLICATE % tid if parsed.key == str(tid) else _keyed(parsed, duplicate=True), None
    metrics.accepted()
    return 200, ACCEPTED % tid if parsed.key == str(tid) else _keyed(parsed, duplicate=False), None


def _refused(
    state: _State, reason: str, status: int, host: str | None, headers: Mapping[str, str], *, label: str = ""
) -> None:
    """Count a refusal for the admin page (in memory; written aggregated, see ``refusals``)."""
    action, name = sender.claimed(headers)
    state.refused.record(
        reason,
        status,
        now_ms=int(state.clock_s() * 1000),
        source=host or "",
        action=action,
        action_name=name,
        label=label,
    )


def _keyed(parsed: Parsed, *, duplicate: bool) -> bytes:
    """The answer to a GET stored under its own key (``webhook-id`` or generated)."""
    return _dumps(
        {
            "ok": True,
            "duplicate": duplicate,
            "transactionid": str(parsed.transactionid),
            "key": parsed.key,
            "deduplicable": parsed.deduplicable,
        }
    )


class ListenerApp:
    """The ASGI app: the private sync path is served directly (it is the hot path), the rest by Starlette.

    ``secret_book`` holds the keys requests are verified with; a face that mounts the admin UI
    (:meth:`mount`) hands it over, so a secret changed there is in force at once.
    """

    def __init__(
        self, inner: Starlette, token: str, *, secret_book: SecretBook, closers: list[Callable[[], None]]
    ) -> None:
        self.inner = inner
        self.state = inner.state
        self.secret_book = secret_book
        self._token = token.encode()
        self._closers = closers

    def mount(self, path: str, app: ASGIApp, *, on_close: Callable[[], None] | None = None) -> None:
        """Serve ``app`` under ``path`` beside health and metrics, before the listener starts (how
        ``contactsync.servers`` adds the admin UI); ``on_close`` runs when the listener shuts down,
        after its own engine is disposed."""
        self.inner.mount(path, app)
        if on_close is not None:
            self._closers.append(on_close)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not (path.startswith("/sync/") and "/" not in path[6:]):
            await self.inner(scope, receive, send)
            return
        state: _State = self.state.listener
        if hmac.compare_digest(path[6:].encode(), self._token):
            status, body, extra = await _sync(state, scope, receive)
        else:
            state.metrics.reject("not_found")
            status, body, extra = 404, NOT_FOUND, None
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if extra is not None:
            headers.append(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
