"""The platform REST API: ``create_app(settings)`` builds a FastAPI app; everything lives under ``/api``.

The app owns no global state: engine, runtime (clock, transactionid generator) and the optional
in-process dispatcher hang off ``app.state``. Routes are synchronous (SQLAlchemy Core in Starlette's
thread pool); each request is one short transaction committed before its response is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contactsync import __version__
from contactsync.api import errors
from contactsync.api.deps import ApiContext
from contactsync.api.limits import BodyLimit
from contactsync.api.routes import automations, contacts, deliveries, events, keys, lists, runs
from contactsync.automation.runtime import Runtime
from contactsync.db.engine import create_engine
from contactsync.settings import Settings

API_PREFIX = "/api"


def _lifespan(ctx: ApiContext, *, run_dispatcher: bool, owns_engine: bool) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task: asyncio.Task[None] | None = None
        dispatcher = None
        if run_dispatcher:
            from contactsync.delivery.dispatcher import Dispatcher, DispatcherConfig

            dispatcher = Dispatcher(
                ctx.engine, config=DispatcherConfig.from_settings(ctx.settings), metrics=ctx.metrics
            )
            ctx.wake_hooks.append(dispatcher.wake)
            task = asyncio.create_task(dispatcher.run(), name="dispatcher")
        await asyncio.to_thread(ctx.runs.resume_all)
        try:
            yield
        finally:
            if dispatcher is not None and task is not None:
                ctx.wake_hooks.remove(dispatcher.wake)
                dispatcher.stop()
                await task
            await asyncio.to_thread(ctx.runs.stop)
            if owns_engine:
                ctx.engine.dispose()

    return lifespan


def _metrics_endpoint(ctx: ApiContext) -> Any:
    def metrics() -> Response:
        """Prometheus metrics (delivery.md "Observability"); gauges are read from the database now."""
        with ctx.engine.connect() as conn:
            ctx.metrics.refresh(conn, now=ctx.runtime.clock())
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def create_app(
    settings: Settings,
    *,
    engine: sa.Engine | None = None,
    runtime: Runtime | None = None,
    run_dispatcher: bool = False,
) -> FastAPI:
    """The API app for ``settings`` (schema must be migrated; ``contactsync serve`` does it).

    ``engine`` and ``runtime`` default to ones built from settings; ``run_dispatcher`` runs one
    dispatcher in the app's event loop (the embedded SQLite set-up), woken after every commit that
    queues deliveries.
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
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=_lifespan(ctx, run_dispatcher=run_dispatcher, owns_engine=owns_engine),
    )
    app.state.contactsync = ctx
    errors.install(app)
    app.add_middleware(BodyLimit)
    api = APIRouter(prefix=API_PREFIX)
    for module in (lists, contacts, events, automations, runs, deliveries, keys):
        api.include_router(module.router)
    app.include_router(api)
    app.add_api_route("/metrics", _metrics_endpoint(ctx), include_in_schema=False)
    if settings.admin_password:  # the admin UI (contactsync.web) at /, behind its own login
        from contactsync.web import create_web_app

        web = create_web_app(
            settings,
            engine=engine,
            side="platform",
            runtime=ctx.runtime,
            on_enqueue=ctx.wake,
            run_workers=ctx.runs,
        )
        app.mount("/", web)
    return app
