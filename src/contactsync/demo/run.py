"""The demo's run: both servers and a dispatcher on one event loop, events fired until the end, a full
resync, a drain, and the final report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
import uvicorn

from contactsync.automation.activity import Event
from contactsync.automation.events import ingest_events
from contactsync.automation.manual import run_to_completion, start_run
from contactsync.automation.runtime import Runtime, utc_now
from contactsync.automation.send_time import Renderer
from contactsync.db.engine import create_engine
from contactsync.db.migrate import upgrade
from contactsync.delivery.dispatcher import Dispatcher, DispatcherConfig
from contactsync.demo.config import DemoConfig, demo_settings
from contactsync.demo.pairing import Pairing
from contactsync.demo.report import FACTS_FILE, Progress, Report, final_report, progress, settled
from contactsync.demo.seed import MAX_ITEMS, random_event, seed
from contactsync.servers import listener_server, platform_server
from contactsync.settings import Settings


def free_port(host: str, preferred: int) -> int:
    """``preferred`` if it can be bound, else any free port."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError(f"no free port on {host}")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the demo (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run(
    config: DemoConfig,
    *,
    show: Callable[[Settings, str], None],
    render: Callable[[Progress, str], Any],
    live: Any,
    on_ready: Callable[[str], None] = lambda url: None,
) -> Report:
    """Run the demo until ``duration_s`` passes or SIGINT/SIGTERM; returns the final report."""
    config.workdir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(9)
    pport = free_port(config.host, config.platform_port)
    lport = free_port(config.host, config.listener_port if config.listener_port != pport else 0)
    settings = demo_settings(config, platform_port=pport, listener_port=lport, password=password)
    platform = create_engine(settings.database_url)
    listener_db = create_engine(settings.listener_database_url)
    await asyncio.to_thread(upgrade, platform, side="platform")
    await asyncio.to_thread(upgrade, listener_db, side="listener")
    pairing = Pairing(listener_db, settings)
    rt = replace(Runtime.create(settings, engine=platform, clock=utc_now), on_secret=pairing.issued)
    listener_url = f"http://{config.host}:{lport}/sync/{settings.listener_token}"
    seeded = await asyncio.to_thread(seed, platform, rt, config=config, listener_url=listener_url)
    pairing.account_id = seeded.account_id
    await asyncio.to_thread(pairing.register_pending)
    facts = {"list_id": seeded.list_id, "public_base_url": settings.public_base_url, "max_items": MAX_ITEMS}
    (config.workdir / FACTS_FILE).write_text(json.dumps(facts))

    platform_app = platform_server(settings, engine=platform, runtime=rt)
    listener_app = listener_server(settings, poll_interval_s=0.5)
    pairing.app_state = listener_app.state
    dispatcher = Dispatcher(
        platform, config=DispatcherConfig.from_settings(settings), renderer=Renderer(platform, rt)
    )
    platform_app.state.contactsync.wake_hooks.append(dispatcher.wake)
    servers = [
        _Server(
            uvicorn.Config(
                app, host=config.host, port=port, log_level="warning", access_log=False, lifespan="on"
            )
        )
        for app, port in ((platform_app, pport), (listener_app, lport))
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupts = 0

    def interrupted() -> None:
        nonlocal interrupts
        interrupts += 1
        stop.set()
        if interrupts > 1:  # a second Ctrl-C: stop draining
            drained.set()

    drained = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted)
    tasks = [asyncio.create_task(s.serve(), name="server") for s in servers]
    dispatch = asyncio.create_task(dispatcher.run(), name="dispatcher")
    state = Progress()
    rng = random.Random(config.seed + 1)
    phase = "firing events"
    try:
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):
                raise OSError("a server could not start (port in use?)")
            await asyncio.sleep(0.05)
        show(settings, listener_url)
        on_ready(f"http://{config.host}:{pport}/login")
        deadline = None if config.duration_s is None else time.monotonic() + config.duration_s
        tick_s = 0.25
        budget = 0.0
        with live:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                budget += config.events_per_s * tick_s
                batch = [random_event(rng, rng.choice(seeded.contact_ids)) for _ in range(int(budget))]
                budget -= len(batch)
                if batch:
                    await asyncio.to_thread(_fire, platform, rt, batch)
                    state.events += len(batch)
                    dispatcher.wake()
                await asyncio.to_thread(progress, platform, listener_db, state)
                live.update(render(state, phase))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), tick_s)
            phase = "full resync"
            live.update(render(state, phase))
            await asyncio.to_thread(_resync, platform, rt, seeded.automation_ids[-1])
            dispatcher.wake()
            phase = "draining"
            drain_until = time.monotonic() + config.drain_timeout_s
            while not drained.is_set() and time.monotonic() < drain_until:
                await asyncio.to_thread(progress, platform, listener_db, state)
                live.update(render(state, phase))
                if settled(state):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(drained.wait(), 0.25)
            phase = "done"
            live.update(render(state, phase))
    finally:
        dispatcher.stop()
        await dispatch
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    report = await asyncio.to_thread(
        final_report,
        platform,
        listener_db,
        events=state.events,
        elapsed_s=time.monotonic() - state.started_s,
        facts=facts,
    )
    platform.dispose()
    listener_db.dispose()
    return report


def _resync(engine: sa.Engine, rt: Runtime, automation_id: int) -> None:
    """Sync every contact once more, so the final check compares the platform's data as it is now."""
    with engine.begin() as conn:
        run = start_run(conn, rt, automation_id)
    run_to_completion(engine, rt, run.id)


def _fire(engine: sa.Engine, rt: Runtime, events: list[Event]) -> None:
    with engine.begin() as conn:
        ingest_events(conn, rt, events)
