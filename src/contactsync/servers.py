"""The servers: each engine's app with its admin UI mounted, assembled here so no engine imports a face.

``contactsync serve``, ``contactsync listen``, the demo and the uvicorn factory all build their
servers with these functions; a test that needs only an engine calls the engine's ``create_app``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import sqlalchemy as sa
from fastapi import FastAPI

from contactsync.api.app import bootstrap_operator
from contactsync.api.app import create_app as create_api_app
from contactsync.api.deps import ApiContext
from contactsync.automation.runtime import Runtime
from contactsync.delivery.retry import DEFAULT_SCHEDULE_S
from contactsync.listener.app import ListenerApp
from contactsync.listener.app import create_app as create_listener_app
from contactsync.listener.handlers import Handler
from contactsync.listener.serve import resolve_token
from contactsync.settings import Settings
from contactsync.web import close_web_app, create_listener_web_app, create_web_app


def platform_server(
    settings: Settings,
    *,
    engine: sa.Engine | None = None,
    runtime: Runtime | None = None,
    run_dispatcher: bool = False,
    metrics_port: int | None = None,
) -> FastAPI:
    """The platform API (arguments as :func:`contactsync.api.app.create_app`) with the admin UI at ``/``
    when ``CONTACTSYNC_ADMIN_PASSWORD`` is set, which also makes the operator on a fresh installation."""
    app = create_api_app(
        settings, engine=engine, runtime=runtime, run_dispatcher=run_dispatcher, metrics_port=metrics_port
    )
    if settings.admin_password:
        ctx: ApiContext = app.state.contactsync
        bootstrap_operator(settings, ctx.engine, now=ctx.runtime.clock())
        web = create_web_app(
            settings,
            engine=ctx.engine,
            side="platform",
            runtime=ctx.runtime,
            on_enqueue=ctx.wake,
            run_workers=ctx.runs,
        )
        app.mount("/", web)
    return app


def listener_server(
    settings: Settings,
    *,
    handlers: Mapping[str, Handler] | None = None,
    clock_s: Callable[[], float] = time.time,
    schedule_s: Sequence[float] = DEFAULT_SCHEDULE_S,
    poll_interval_s: float = 1.0,
) -> ListenerApp:
    """The listener (arguments as :func:`contactsync.listener.app.create_app`) with its admin UI at
    ``/admin`` when an admin password is set; the UI shares the listener's keys and closes with it."""
    app = create_listener_app(
        settings, handlers=handlers, clock_s=clock_s, schedule_s=schedule_s, poll_interval_s=poll_interval_s
    )
    if settings.admin_password:
        admin = create_listener_web_app(settings, secret_book=app.secret_book)
        app.mount("/admin", admin, on_close=lambda: close_web_app(admin))
    return app


def listener_server_from_env() -> ListenerApp:
    """Uvicorn factory (``uvicorn --factory contactsync.servers:listener_server_from_env``): settings
    from the environment, the token as ``contactsync listen`` finds or makes it."""
    settings, _ = resolve_token(Settings())
    return listener_server(settings)
