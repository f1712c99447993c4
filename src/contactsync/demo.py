"""``contactsync demo``: the platform, a dispatcher and a listener in one process, on SQLite, with live data.

Zero configuration: a working directory holds two SQLite files; a list with custom fields gets
~1,000 contacts with months of activity; two automations (a POST form with every section, and a GET
whose URL is a shortcode template) sync contacts to the local listener while events are fired.
Loopback is allowed explicitly (``allowed_cidrs=127.0.0.0/8``) — the only way the dispatcher will
talk to 127.0.0.1. The run ends after ``duration_s`` or on Ctrl-C, drains what is in flight, and
reports whether every generated delivery was delivered and projected by the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvicorn

from contactsync.automation.action_settings import SyncActionSettings
from contactsync.automation.actions import create_action
from contactsync.automation.activity import (
    CampaignOpened,
    Event,
    GoalReached,
    LeadScored,
    LinkClicked,
    PageVisited,
    insert_activities,
)
from contactsync.automation.automations import AutomationIn, create_automation
from contactsync.automation.contacts import ContactIn, upsert_contact
from contactsync.automation.events import ingest_events
from contactsync.automation.lists import FieldIn, ListIn, create_account, create_field, create_list
from contactsync.automation.manual import run_to_completion, start_run
from contactsync.automation.runtime import IssuedSecret, Runtime, utc_now
from contactsync.automation.send_time import Renderer
from contactsync.db.engine import create_engine
from contactsync.db.listener import contacts as sync_contacts
from contactsync.db.listener import handler_runs, inbox
from contactsync.db.migrate import upgrade
from contactsync.db.platform import deliveries
from contactsync.db.sealing import keyring_from_settings
from contactsync.delivery.dispatcher import Dispatcher, DispatcherConfig
from contactsync.demo_check import differences
from contactsync.errors import ConfigError, ContactSyncError
from contactsync.listener import secrets as listener_secrets
from contactsync.settings import Settings
from contactsync.wire.payload import SECTIONS
from contactsync.wire.sender import display_name

log = logging.getLogger("contactsync.demo")

FIRST = ("jane", "john", "amélie", "li", "omar", "sofia", "lukas", "maría", "kenji", "ava", "noah", "zoë")
LAST = ("doe", "smith", "o'neil", "müller", "garcía", "tanaka", "nguyen", "rossi", "kowalski", "dubois")
CITIES = ("Paris", "Berlin", "São Paulo", "Tokyo", "Toronto", "Lagos", "Sydney", "Austin", "Kraków")
PLANS = ("free", "starter", "pro", "enterprise")
CAMPAIGNS = ((1, "Spring launch"), (2, "Weekly digest #41"), (3, "Webinar invite"), (4, "Black Friday"))
PAGES = ("https://shop.example/pricing", "https://shop.example/docs/start", "https://shop.example/blog/sync")
LINKS = (
    "https://shop.example/offer?utm=mail",
    "https://shop.example/webinar",
    "https://shop.example/pricing",
)
GOALS = ((1, "Signed up for webinar"), (2, "Started trial"))
PROJECTION_HANDLER = "sql"


ALL_SECTIONS = [s for s in SECTIONS if s not in {"transactionid", "contact"}]
MAX_ITEMS = 20
"""What the demo's POST actions send: every section, the 20 most recent items of each."""
FACTS_FILE = "demo.json"
"""Beside the databases: what ``demo --check`` needs to check them again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoConfig:
    """How the demo runs; ``duration_s`` None means until Ctrl-C."""

    workdir: Path
    duration_s: float | None = None
    contacts: int = 1000
    events_per_s: float = 10.0
    host: str = "127.0.0.1"
    platform_port: int = 8000
    listener_port: int = 8001
    drain_timeout_s: float = 60.0
    seed: int = 7


@dataclass(frozen=True, slots=True)
class Seeded:
    account_id: int
    list_id: int
    contact_ids: list[int]
    automation_ids: list[int]
    secrets: list[str]


@dataclass(slots=True)
class Progress:
    """What the terminal shows; refreshed from both databases."""

    events: int = 0
    states: dict[str, int] = field(default_factory=dict)
    received: int = 0
    projected_runs: int = 0
    projected_contacts: int = 0
    started_s: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Report:
    generated: int
    delivered: int
    failed: int
    projected: int
    missing: list[int]
    events: int
    elapsed_s: float
    differences: list[str] = field(default_factory=list)
    """Where a contact's projection differs from the platform's data (demo_check)."""

    @property
    def ok(self) -> bool:
        return (
            self.generated > 0
            and self.delivered == self.generated
            and not self.missing
            and not self.differences
        )


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


def demo_settings(config: DemoConfig, *, platform_port: int, listener_port: int, password: str) -> Settings:
    wd = config.workdir
    return Settings(
        database_url=f"sqlite:///{wd / 'platform.db'}",
        listener_database_url=f"sqlite:///{wd / 'listener.db'}",
        public_base_url=f"http://{config.host}:{platform_port}",
        allow_private_networks=False,
        allowed_cidrs=["127.0.0.0/8"],
        admin_password=password,
        session_secret=secrets.token_urlsafe(32),
        listener_token=secrets.token_urlsafe(32),
        dispatcher_concurrency=50,
        poll_interval_s=0.5,
    )


def _contact(rng: random.Random, i: int) -> ContactIn:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    signup = datetime(2025, 1, 1) + timedelta(days=rng.randrange(600))
    return ContactIn(
        list_id=0,
        email=f"{first}.{last}.{i}@example.com".replace("'", ""),
        phone=f"+1 (555) {rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}",
        status="unsubscribed" if rng.random() < 0.1 else "subscribed",
        fields={
            "FIRST_NAME": first,
            "LAST_NAME": last,
            "CITY": rng.choice(CITIES),
            "PLAN": rng.choice(PLANS),
            "SIGNUP_DATE": signup.strftime("%Y-%m-%d"),
        },
    )


def random_event(rng: random.Random, contact_id: int, at: datetime | None = None) -> Event:
    """One plausible activity event for ``contact_id`` (``at`` None: now)."""
    roll = rng.random()
    if roll < 0.35:
        cid, name = rng.choice(CAMPAIGNS)
        return CampaignOpened(
            kind="campaign.opened", contact_id=contact_id, campaign_id=cid, campaign_name=name, occurred_at=at
        )
    if roll < 0.6:
        return PageVisited(kind="page.visited", contact_id=contact_id, url=rng.choice(PAGES), occurred_at=at)
    if roll < 0.8:
        return LinkClicked(kind="link.clicked", contact_id=contact_id, url=rng.choice(LINKS), occurred_at=at)
    if roll < 0.9:
        gid, name = rng.choice(GOALS)
        return GoalReached(
            kind="goal.reached", contact_id=contact_id, goal_id=gid, goal_name=name, occurred_at=at
        )
    return LeadScored(
        kind="lead_score.changed",
        contact_id=contact_id,
        score_id=1,
        name="Engagement",
        value=rng.choice((5, 10, 15)),
        occurred_at=at,
    )


def seed(engine: sa.Engine, rt: Runtime, *, config: DemoConfig, listener_url: str) -> Seeded:
    """The demo's list, contacts with history, and its two automations (one transaction)."""
    rng = random.Random(config.seed)
    now = rt.clock()
    with engine.begin() as conn:
        account = create_account(conn, name="Demo", now=now)
        lst = create_list(conn, ListIn(account_id=account, name="Newsletter"), now=now)
        ids = {}
        for name, kind, choices in (
            ("First Name", "text", []),
            ("Last Name", "text", []),
            ("City", "text", []),
            ("Plan", "choice", list(PLANS)),
            ("Signup Date", "date", []),
        ):
            created = create_field(
                conn, FieldIn(list_id=lst.id, name=name, type=kind, choices=choices), now=now
            )
            ids[created.shortcode_key] = created.id
        contact_ids = []
        for i in range(config.contacts):
            data = _contact(rng, i).model_copy(update={"list_id": lst.id})
            contact_ids.append(upsert_contact(conn, data, now=now).contact.id)
        history = [
            random_event(rng, cid, now - timedelta(days=rng.randrange(1, 120), minutes=rng.randrange(1440)))
            for cid in contact_ids
            for _ in range(rng.randrange(0, 6))
        ]
        insert_activities(conn, history, [e.contact_id or 0 for e in history], now=now)
        form = create_automation(
            conn,
            rt,
            AutomationIn.model_validate(
                {
                    "list_id": lst.id,
                    "name": "Campaign engagement → CRM (POST form)",
                    "trigger": {"event": "campaign.opened"},
                    "conditions": {"type": "group", "op": "and", "conditions": [
                        {"type": "field", "subject": "status", "op": "eq", "value": "subscribed"}]},
                    "reentry": {"policy": "always"},
                }
            ),
        )  # fmt: skip
        post = create_action(
            conn,
            rt,
            automation_id=form.id,
            settings=SyncActionSettings(
                name="Contact to the CRM",
                url=listener_url,
                sections=ALL_SECTIONS,
                max_items=MAX_ITEMS,
                headers=[{"name": "X-Demo", "value": "contactsync"}],
            ),
        )
        get = create_automation(
            conn,
            rt,
            AutomationIn.model_validate(
                {
                    "list_id": lst.id,
                    "name": "Pricing-page visitors → ad audience (GET template)",
                    "trigger": {"event": "page.visited"},
                    "conditions": {"type": "group", "op": "and", "conditions": [
                        {"type": "activity", "kind": "page_visit", "url_op": "contains", "url": "pricing",
                         "within_days": 30}]},
                    "reentry": {"policy": "per_hours", "hours": 1},
                }
            ),
        )  # fmt: skip
        # wire keys carry the contact's values as they are (the listener merges them into its copy);
        # the ad platform's own parameters show what the functions do to them
        template = (
            f"{listener_url}?transactionid=[#TRANSACTIONID#]&contact[id]=[#ID#]"
            "&contact[email]=[#EMAIL#]&contact[phone]=[#PHONE#]&contact[profile_url]=[#PROFILE_URL#]"
            f"&fields[0][id]={ids['FIRST_NAME']}&fields[0][name]=First+Name&fields[0][value]=[#FIRST_NAME#]"
            f"&fields[1][id]={ids['CITY']}&fields[1][name]=City&fields[1][value]=[#CITY#]"
            "&lead-status[score]=[#LEAD_SCORE#]&lead-status[label]=[#LEAD_STATUS#]"
            "&audience_email=[#EMAIL_NORMALIZE EMAIL#]&audience_phone=[#PHONE_E164 PHONE#]"
            "&greeting=[#PROPER FIRST_NAME#]&region=[#UPPER CITY#]"
        )
        get_action = create_action(
            conn,
            rt,
            automation_id=get.id,
            settings=SyncActionSettings(name="Visitor to the ad audience", url=template, method="GET"),
        )
        resync = create_automation(
            conn,
            rt,
            AutomationIn.model_validate(
                {
                    "list_id": lst.id,
                    "name": "Full resync → listener (manual)",
                    "trigger": {"event": "manual"},
                    "reentry": {"policy": "always"},
                }
            ),
        )
        resync_action = create_action(
            conn,
            rt,
            automation_id=resync.id,
            settings=SyncActionSettings(
                name="Everyone to the listener", url=listener_url, sections=ALL_SECTIONS, max_items=MAX_ITEMS
            ),
        )
    secrets_in_clear = [rt.keyring.open(a.secret) for a in (post, get_action, resync_action)]
    return Seeded(account, lst.id, contact_ids, [form.id, get.id, resync.id], secrets_in_clear)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the demo (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def progress(platform: sa.Engine, listener: sa.Engine, state: Progress) -> None:
    """Refresh ``state`` from both databases (called in a worker thread)."""
    with platform.connect() as conn:
        rows = conn.execute(sa.select(deliveries.c.state, sa.func.count()).group_by(deliveries.c.state)).all()
        state.states = {str(s): int(n) for s, n in rows}
    with listener.connect() as conn:
        state.received = int(conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one())
        state.projected_runs = int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(handler_runs)
                .where(handler_runs.c.handler == PROJECTION_HANDLER, handler_runs.c.state == "done")
            ).scalar_one()
        )
        state.projected_contacts = int(
            conn.execute(sa.select(sa.func.count()).select_from(sync_contacts)).scalar_one()
        )


def final_report(
    platform: sa.Engine, listener: sa.Engine, *, events: int, elapsed_s: float, facts: Mapping[str, Any]
) -> Report:
    """Compare every generated delivery with what the listener stored, and each contact's projection with
    the platform's data (``facts``: what :data:`FACTS_FILE` holds)."""
    with platform.connect() as conn:
        rows = conn.execute(sa.select(deliveries.c.transactionid, deliveries.c.state)).all()
    with listener.connect() as conn:
        done = {
            int(tid)
            for (tid,) in conn.execute(
                sa.select(inbox.c.transactionid)
                .join(handler_runs, handler_runs.c.inbox_id == inbox.c.id)
                .where(handler_runs.c.handler == PROJECTION_HANDLER, handler_runs.c.state == "done")
            )
        }
    generated = {int(t) for t, _ in rows}
    return Report(
        generated=len(generated),
        delivered=sum(1 for _, s in rows if s == "delivered"),
        failed=sum(1 for _, s in rows if s == "failed"),
        projected=len(generated & done),
        missing=sorted(generated - done)[:20],
        events=events,
        elapsed_s=elapsed_s,
        differences=differences(
            platform,
            listener,
            list_id=int(facts["list_id"]),
            public_base_url=str(facts["public_base_url"]),
            max_items=int(facts["max_items"]),
        ),
    )


def check(workdir: Path) -> Report:
    """The final report again for a demo directory (``contactsync demo --check``)."""
    facts_path = workdir / FACTS_FILE
    if not facts_path.is_file():
        raise ConfigError(f"{workdir} holds no demo ({FACTS_FILE} is missing)")
    facts = json.loads(facts_path.read_text())
    platform = create_engine(f"sqlite:///{workdir / 'platform.db'}")
    listener = create_engine(f"sqlite:///{workdir / 'listener.db'}")
    try:
        return final_report(platform, listener, events=0, elapsed_s=0.0, facts=facts)
    finally:
        platform.dispose()
        listener.dispose()


def settled(state: Progress) -> bool:
    """Nothing left in flight on either side."""
    busy = state.states.get("pending", 0) + state.states.get("in_flight", 0)
    total = sum(state.states.values())
    return busy == 0 and state.projected_runs >= total - state.states.get("failed", 0) - state.states.get(
        "cancelled", 0
    )


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

    from contactsync.api.app import create_app as create_platform_app
    from contactsync.listener.app import create_app as create_listener_app

    platform_app = create_platform_app(settings, engine=platform, runtime=rt)
    if not any(getattr(r, "path", None) == "" for r in platform_app.routes):  # the UI is not mounted yet
        from contactsync.web import create_web_app

        ctx = platform_app.state.contactsync
        platform_app.mount("/", create_web_app(settings, engine=platform, runtime=rt, on_enqueue=ctx.wake))
    listener_app = create_listener_app(settings, poll_interval_s=0.5)
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


class Pairing:
    """The demo's listener accepts every action of the demo's account, those created during the demo too.

    The platform's runtime reports each new or rotated action secret (``Runtime.on_secret``); this adds
    it to the listener's Secrets (rotating it in under the same label), exactly what a person does on
    the listener's Secrets page, labelled as the platform names the action (wire/sender.py), and
    reloads the running listener's keys at once. Actions of any other account are not paired: their
    owners pair them by hand, as with any listener.
    """

    def __init__(self, listener_db: sa.Engine, settings: Settings) -> None:
        self.engine = listener_db
        self.keyring = keyring_from_settings(settings, database_url=settings.listener_database_url)
        self.account_id: int | None = None  # known once seeded; secrets issued before wait for it
        self.app_state: Any = None
        self._waiting: list[IssuedSecret] = []

    def issued(self, issued: IssuedSecret) -> None:
        if self.account_id is None:
            self._waiting.append(issued)
        elif issued.account_id == self.account_id:
            try:
                self._register(issued)
            except (ContactSyncError, sa.exc.SQLAlchemyError) as exc:  # never fail the platform's change
                log.warning("action %s not paired with the demo listener: %s", issued.action_id, exc)

    def register_pending(self) -> None:
        waiting, self._waiting = self._waiting, []
        for issued in waiting:
            self.issued(issued)

    def _register(self, issued: IssuedSecret) -> None:
        label = display_name(issued.action_id, issued.automation_name, issued.action_name)
        now_ms = int(time.time() * 1000)
        with self.engine.begin() as conn:
            listener_secrets.pair(conn, self.keyring, label=label, secret=issued.secret, now_ms=now_ms)
        listener = getattr(self.app_state, "listener", None) if self.app_state is not None else None
        if listener is not None:  # running: accepted from the next request on
            listener.book.load(self.engine, now_ms=now_ms)


def _resync(engine: sa.Engine, rt: Runtime, automation_id: int) -> None:
    """Sync every contact once more, so the final check compares the platform's data as it is now."""
    with engine.begin() as conn:
        run = start_run(conn, rt, automation_id)
    run_to_completion(engine, rt, run.id)


def _fire(engine: sa.Engine, rt: Runtime, events: list[Event]) -> None:
    with engine.begin() as conn:
        ingest_events(conn, rt, events)
