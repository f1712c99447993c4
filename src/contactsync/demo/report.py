"""What the demo reports: its live progress, read from both databases, and the final report — every
delivery delivered and projected, every contact's projection equal to the platform's data."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from contactsync.db.engine import create_engine
from contactsync.db.listener import contacts as sync_contacts
from contactsync.db.listener import handler_runs, inbox
from contactsync.db.platform import deliveries
from contactsync.demo.check import differences
from contactsync.errors import ConfigError

PROJECTION_HANDLER = "sql"
FACTS_FILE = "demo.json"
"""Beside the databases: what ``demo --check`` needs to check them again."""


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
    """Where a contact's projection differs from the platform's data (:mod:`.check`)."""

    @property
    def ok(self) -> bool:
        return (
            self.generated > 0
            and self.delivered == self.generated
            and not self.missing
            and not self.differences
        )


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
