"""Running the listener: ``contactsync listen`` (the server the CLI hands in) and its handlers alone.

Zero configuration: without ``CONTACTSYNC_LISTENER_TOKEN`` a token is generated once and kept in
a file (mode 0600), so the private URL printed at first start stays valid across restarts.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path

from starlette.types import ASGIApp

from contactsync.db.migrate import upgrade
from contactsync.db.retention import Retention
from contactsync.errors import ConfigError
from contactsync.listener.app import MIN_TOKEN_CHARS, build_handlers, inbox_engine, limits_of, stored_parser
from contactsync.listener.getmap import check_mapping
from contactsync.listener.handlers import Runner, close_handlers
from contactsync.settings import Settings

DEFAULT_TOKEN_FILE = Path(".contactsync-listener-token")
TOKEN_BYTES = 32
"""32 random bytes give 43 URL-safe characters, above the 32 listener.md asks for."""


def resolve_token(settings: Settings, *, token_file: Path = DEFAULT_TOKEN_FILE) -> tuple[Settings, bool]:
    """``settings`` with a listener token: the configured one, the saved one, or a new one (saved).

    The flag says whether the token was created now (the caller prints it: it is the only way to learn it).
    """
    if settings.listener_token:
        return settings, False
    if token_file.exists():
        token = token_file.read_text().strip()
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{token_file} holds a token shorter than {MIN_TOKEN_CHARS} characters")
        return settings.model_copy(update={"listener_token": token}), False
    token = secrets.token_urlsafe(TOKEN_BYTES)
    descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(token + "\n")
    return settings.model_copy(update={"listener_token": token}), True


def run(
    settings: Settings,
    *,
    server: Callable[[Settings], ASGIApp],
    host: str,
    port: int,
    token_file: Path = DEFAULT_TOKEN_FILE,
) -> None:
    """Serve the listener ``server`` builds (a face: ``contactsync.servers.listener_server``) until
    interrupted, printing its private URL."""
    import uvicorn

    settings, created = resolve_token(settings, token_file=token_file)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/sync/{settings.listener_token}"
    print(f"contactsync listener: POST or GET {url}", flush=True)
    if created:
        print(f"  (new token saved to {token_file}; give this URL to the platform)", flush=True)
    if not settings.listener_secret:
        print(
            "  no configured secret: signatures are checked once one is added on the admin UI's Secrets page "
            "(or set CONTACTSYNC_LISTENER_SECRET=whsec_…)",
            flush=True,
        )
    print(
        f"  health {url}/health · metrics {url}/metrics · inbox {settings.listener_database_url}", flush=True
    )
    uvicorn.run(
        server(settings),
        host=host,
        port=port,
        log_level="warning",
        ws="none",
        access_log=False,
        http="httptools",  # C parser and loop (uvicorn[standard]): missing ones fail here, no slow fallback
        loop="uvloop",
        lifespan="on",
    )


async def run_handlers(settings: Settings, *, stop: asyncio.Event, poll_interval_s: float = 0.2) -> None:
    """Run the handlers of ``settings`` (no HTTP) until ``stop`` is set: the other half of a split listener.

    Beside listeners started with ``listener_run_handlers=false`` this keeps handler work off the
    processes that acknowledge requests; new inbox rows are found by polling every ``poll_interval_s``.
    """
    engine = inbox_engine(settings.listener_database_url)
    upgrade(engine, side="listener")

    def clock_ms() -> int:
        return int(time.time() * 1000)

    handlers = build_handlers(settings, clock_ms=clock_ms)
    runner = Runner(
        engine,
        handlers,
        parse=stored_parser(limits_of(settings), check_mapping(settings.listener_get_mapping)),
        poll_interval_s=poll_interval_s,
        lease_s=settings.listener_handler_lease_s,
        stall_s=settings.listener_handler_stall_s,
        clock_ms=clock_ms,
        retention=Retention.from_settings(settings),
        retention_interval_s=settings.retention_interval_s,
    )
    runner.start()
    try:
        await stop.wait()
    finally:
        await runner.stop()
        await close_handlers(handlers)
        engine.dispose()


def handlers_main(settings: Settings) -> None:
    """``contactsync listen --handlers-only``: run handlers until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        print(f"contactsync listener handlers: running on {settings.listener_database_url}", flush=True)
        await run_handlers(settings, stop=stop)

    asyncio.run(main())
