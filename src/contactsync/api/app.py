"""The platform REST API: ``create_app(settings)`` builds a FastAPI app; everything lives under ``/api``.

The app owns no global state: engine, runtime (clock, transactionid generator) and the optional
in-process dispatcher hang off ``app.state``. Routes are synchronous (SQLAlchemy Core in Starlette's
thread pool); each request is one short transaction committed before its response is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from contactsync import __version__
from contactsync.api import errors
from contactsync.api.deps import ApiContext
from contactsync.api.limits import BodyLimit
from contactsync.api.routes import automations, contacts, deliveries, events, keys, lists, people, runs
from contactsync.automation.runtime import Runtime
from contactsync.db.engine import create_engine
from contactsync.errors import ConfigError
from contactsync.settings import Settings

log = logging.getLogger("contactsync.api")

API_PREFIX = "/api"
ROUTERS = (lists, contacts, events, automations, runs, deliveries, keys, people)


def operations() -> Iterator[tuple[str, APIRoute]]:
    """Every API operation with its full path: the route table the role, audit and plan tests walk
    (FastAPI resolves included routers lazily, so ``app.routes`` does not list them)."""
    for module in ROUTERS:
        for route in module.router.routes:
            if isinstance(route, APIRoute):
                yield API_PREFIX + route.path, route


def _lifespan(ctx: ApiContext, *, run_dispatcher: bool, owns_engine: bool, metrics_port: int | None) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task: asyncio.Task[None] | None = None
        recording: asyncio.Task[None] | None = None
        stop_recording = asyncio.Event()
        dispatcher = None
        metrics_server = None
        if metrics_port is not None:
            metrics_server, metrics_thread = await _serve_metrics(ctx, metrics_port)
        if run_dispatcher:
            from contactsync.automation.send_time import Renderer
            from contactsync.delivery.dispatcher import Dispatcher, DispatcherConfig

            dispatcher = Dispatcher(
                ctx.engine,
                config=DispatcherConfig.from_settings(ctx.settings),
                metrics=ctx.metrics,
                renderer=Renderer(ctx.engine, ctx.runtime),
            )
            ctx.wake_hooks.append(dispatcher.wake)
            task = asyncio.create_task(dispatcher.run(), name="dispatcher")
            recording = asyncio.create_task(_record_sync_activity(ctx, stop_recording), name="sync-activity")
        await asyncio.to_thread(ctx.runs.resume_all)
        watch = None if run_dispatcher else asyncio.create_task(_warn_when_nothing_sends(ctx), name="stall")
        try:
            yield
        finally:
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            if recording is not None:
                stop_recording.set()
                await recording
            if dispatcher is not None and task is not None:
                ctx.wake_hooks.remove(dispatcher.wake)
                dispatcher.stop()
                await task
            await asyncio.to_thread(ctx.runs.stop)
            if metrics_server is not None:
                metrics_server.should_exit = True
                await asyncio.to_thread(metrics_thread.join)
            if owns_engine:
                ctx.engine.dispose()

    return lifespan


async def _record_sync_activity(ctx: ApiContext, stop: asyncio.Event) -> None:
    """Beside the in-process dispatcher: delivered syncs become webhook activity
    (automation/sync_activity.py)."""
    from contactsync.automation.sync_activity import keep_recording

    await keep_recording(
        ctx.engine,
        ctx.runtime,
        interval_s=ctx.settings.sync_activity_interval_s,
        settle_s=ctx.settings.sync_activity_settle_s,
        stop=stop,
        wake=ctx.wake,
    )


STALL_CHECK_S = 60.0


async def _warn_when_nothing_sends(ctx: ApiContext) -> None:
    """Without an in-process dispatcher, say in the log (every minute, while it lasts) when
    deliveries are due and no ``contactsync worker`` is alive to send them."""
    from contactsync.delivery.presence import stall

    def check() -> object:
        with ctx.engine.connect() as conn:
            return stall(conn, now=ctx.runtime.clock())

    while True:
        await asyncio.sleep(STALL_CHECK_S)
        try:
            found = await asyncio.to_thread(check)
        except sa.exc.SQLAlchemyError:
            continue
        if found is not None:
            log.warning("%s", found)


def metrics_app(ctx: ApiContext) -> Starlette:
    """Prometheus metrics (delivery.md "Observability") as an app of their own: served on a separate
    port (``--metrics-port``, 127.0.0.1 by default), never on the public API port (accounts.md)."""

    def metrics(_request: Request) -> Response:
        with ctx.engine.connect() as conn:  # gauges are read from the database now
            ctx.metrics.refresh(conn, now=ctx.runtime.clock())
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", metrics)])


async def _serve_metrics(ctx: ApiContext, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    """The metrics app on its own uvicorn server, in a thread of its own (signals stay the API's)."""
    config = uvicorn.Config(
        metrics_app(ctx), host=ctx.settings.metrics_host, port=port, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="metrics", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise ConfigError(f"cannot serve metrics on {ctx.settings.metrics_host}:{port}")
        await asyncio.sleep(0.01)
    return server, thread


def bootstrap_operator(settings: Settings, engine: sa.Engine, *, now: datetime) -> None:
    """On an installation without an operator, ``CONTACTSYNC_ADMIN_PASSWORD`` makes one, who signs in
    as ``CONTACTSYNC_ADMIN_EMAIL``; later changes of the password go through ``contactsync users``."""
    from contactsync.tenancy import people
    from contactsync.tenancy.audit import Actor, record

    with engine.begin() as conn:
        made = people.bootstrap_operator(
            conn, email=settings.admin_email, password=settings.admin_password, now=now
        )
        if made is not None:
            actor = Actor(kind="cli", id=None, label="CONTACTSYNC_ADMIN_PASSWORD")
            record(conn, actor, "user.bootstrap_operator", account_id=None, target_type="user",
                   target_id=made.id, now=now, detail={"email": made.email})  # fmt: skip


def _serve_docs(app: FastAPI) -> None:
    """``/api/docs``: Swagger UI from the ``swagger-ui-bundle-v2`` package, so the page works on an
    installation without internet access (FastAPI's default page loads its script from a CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    assets = f"{API_PREFIX}/docs/assets"
    app.mount(assets, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get(f"{API_PREFIX}/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{API_PREFIX}/openapi.json",
            title="contactsync platform API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
        )


def create_app(
    settings: Settings,
    *,
    engine: sa.Engine | None = None,
    runtime: Runtime | None = None,
    run_dispatcher: bool = False,
    metrics_port: int | None = None,
) -> FastAPI:
    """The API app for ``settings`` (schema must be migrated; ``contactsync serve`` does it).

    ``engine`` and ``runtime`` default to ones built from settings; ``run_dispatcher`` runs one
    dispatcher in the app's event loop (the embedded SQLite set-up), woken after every commit that
    queues deliveries. ``metrics_port`` serves Prometheus metrics on a port of their own. The API
    alone: :func:`contactsync.servers.platform_server` adds the admin UI.
    """
    owns_engine = engine is None
    engine = engine if engine is not None else create_engine(settings.database_url)
    ctx = ApiContext(
        settings=settings, engine=engine, runtime=runtime or Runtime.create(settings, engine=engine)
    )
    app = FastAPI(
        title="contactsync platform API",
        version=__version__,
        description="Contacts, marketing activity, automations and the Sync Contact to Third Party action. "
        "Authenticate with `Authorization: Bearer <API key>`.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # served below with Swagger UI's assets from an installed package, not a CDN
        redoc_url=None,
        lifespan=_lifespan(
            ctx, run_dispatcher=run_dispatcher, owns_engine=owns_engine, metrics_port=metrics_port
        ),
    )
    app.state.contactsync = ctx
    errors.install(app)
    app.add_middleware(BodyLimit)
    api = APIRouter(prefix=API_PREFIX)
    for module in ROUTERS:
        api.include_router(module.router)
    app.include_router(api)
    _serve_docs(app)
    return app
