"""``contactsync worker``: run dispatcher processes against the platform database.

On PostgreSQL any number of processes (here or on other machines) share the outbox; on SQLite one
dispatcher is the supported set-up. Each process handles SIGTERM by finishing or releasing its
in-flight work; the parent forwards SIGTERM/SIGINT to its children and waits for them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import datetime
from types import FrameType
from typing import Any

import sqlalchemy as sa
import uvloop
from prometheus_client import CollectorRegistry, start_http_server

from contactsync.db import create_engine
from contactsync.db.backend import backend_of_url
from contactsync.delivery.config import DispatcherConfig, default_owner
from contactsync.delivery.dispatcher import Dispatcher
from contactsync.delivery.metrics import DeliveryMetrics
from contactsync.errors import ConfigError
from contactsync.settings import Settings

log = logging.getLogger("contactsync.delivery.worker")

RendererFactory = Callable[[Settings, sa.Engine], Callable[[datetime], int]]
"""Builds a process's send-time renderer (``Dispatcher(renderer=…)``); the face passes a module-level
function, which a spawned child process receives by name."""
Job = Callable[[sa.Engine, Settings, asyncio.Event, Callable[[], None]], Coroutine[Any, Any, None]]
"""Platform work the face that starts the worker runs beside the dispatcher (module-level functions,
so spawned children can unpickle them): ``(engine, settings, stop, wake the dispatcher)``."""


async def _dispatch_with(
    dispatcher: Dispatcher, jobs: Sequence[Job], engine: sa.Engine, settings: Settings
) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(job(engine, settings, stop, dispatcher.wake)) for job in jobs]
    try:
        await dispatcher.run(handle_signals=True)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def run_one(
    settings: Settings,
    *,
    metrics_port: int | None = None,
    index: int = 0,
    renderer: RendererFactory | None = None,
    jobs: Sequence[Job] = (),
) -> None:
    """One dispatcher in this process, until SIGTERM/SIGINT: every process renders delayed deliveries
    (their batches are claimed with SKIP LOCKED); ``jobs`` run beside it on index 0."""
    engine = create_engine(settings.database_url)
    registry = CollectorRegistry()
    metrics = DeliveryMetrics(registry)
    if metrics_port is not None:
        start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    config = DispatcherConfig.from_settings(settings, owner=f"{default_owner()}#{index}")
    if index:  # one pruner, notifier and set of jobs per worker group (more would wait on each other)
        config = replace(config, retention=None, mailer=None)
        jobs = ()
    try:
        render = None if renderer is None else renderer(settings, engine)
        dispatcher = Dispatcher(engine, config=config, metrics=metrics, renderer=render)
        # the start-up heap (the whole app imported) never becomes garbage: keep the collector from
        # walking it again and again while it sends (measured: a full collection cost ~0.2 s)
        gc.freeze()
        # uvloop, as the servers run on (uvicorn): its C loop and transports cost a sender less per request
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_dispatch_with(dispatcher, jobs, engine, settings))
    finally:
        engine.dispose()


def _child(
    settings_json: str,
    metrics_port: int | None,
    index: int,
    renderer: RendererFactory | None,
    jobs: Sequence[Job],
) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.model_validate_json(settings_json)
    run_one(settings, metrics_port=metrics_port, index=index, renderer=renderer, jobs=jobs)


def run(
    settings: Settings,
    *,
    processes: int = 1,
    metrics_port: int | None = None,
    renderer: RendererFactory | None = None,
    jobs: Sequence[Job] = (),
) -> int:
    """Run ``processes`` dispatchers; returns the worst child exit code."""
    if processes < 1:
        raise ConfigError("--processes must be at least 1")
    if processes > 1 and backend_of_url(settings.database_url).single_writer:
        raise ConfigError("SQLite supports one dispatcher process; use PostgreSQL to scale out")
    if processes == 1:
        run_one(settings, metrics_port=metrics_port, renderer=renderer, jobs=jobs)
        return 0
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(
            target=_child,
            args=(
                settings.model_dump_json(),
                None if metrics_port is None else metrics_port + i,
                i,
                renderer,
                tuple(jobs),
            ),
            name=f"contactsync-dispatcher-{i}",
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    return max((child.exitcode or 0) for child in children)
