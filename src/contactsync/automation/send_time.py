"""Deliveries rendered when their delay ends (a delayed action's ``render: "at_send"``, the default).

"Wait a day, then sync" must send the contact as it is a day later. The trigger fixes the
transactionid and queues the delivery at once, so it is listed as waiting from then on, holding the
request as at the trigger and marked ``render_pending``; the dispatcher's claim never takes a marked
row. When the delay ends (up to :data:`LEAD_S` early, so the row is ready when it is due) this job
renders the URL, body, method and headers from the contact's data and the action's settings of that
moment, with the same transactionid, and clears the mark in the same transaction: from then on every
attempt sends those bytes, and a retry never renders again. Rows are taken in batches, ``FOR UPDATE
SKIP LOCKED`` on PostgreSQL, so every dispatcher process runs this job side by side.

What the render finds when the delay ends, and what it does:

* the contact was deleted: the delivery is cancelled (there is nothing to send any more; its note
  and ``last_error`` say so) — an operator's replay would send the request as at the trigger;
* the action was deleted: its deliveries were cancelled with it, as ever (never sent unsigned);
* the automation was paused: the delivery goes, like undelayed deliveries already queued;
* the action's settings changed: the current ones render it (sections, format, time zone, URL
  template, headers) — unless its URL now leads to another endpoint: a delivery never moves, and
  stored header credentials never follow an action elsewhere, so the request as at the trigger is
  kept and the note says why; the same when the current settings no longer compile;
* the action switched to ``at_trigger`` meanwhile: the choice made at the trigger stands;
* cancelled before its delay ended: never rendered
  (:data:`~contactsync.delivery.interventions.NEVER_RENDERED`);
* manual runs and resends queue through the same path, so all of the above holds for them.

The delivery layer does not import this module (automation imports delivery): the faces that
assemble a dispatcher (``contactsync worker``, ``serve --with-worker``, the demo) hand it a
:class:`Renderer`.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from contactsync import shortcodes
from contactsync.automation.action_settings import field_keys, validate_settings
from contactsync.automation.actions import ActionOut, action_from_row
from contactsync.automation.freezing import Freezer, payload_options
from contactsync.automation.payload_builder import PayloadOptions, Rendered, build
from contactsync.automation.runtime import Runtime
from contactsync.db.backend import Backend, backend_of
from contactsync.db.platform import actions, automations, deliveries
from contactsync.delivery.outbox import notify
from contactsync.delivery.states import PENDING, move
from contactsync.errors import ContactSyncError
from contactsync.settings import Settings

LEAD_S = 1.0
"""How early a row due soon is rendered (one poll interval), so that it is ready when it is due."""
BATCH = 200
CONTACT_GONE = "cancelled: its contact was deleted before the delay ended, so there was nothing to render"


def rendered_note(now: datetime) -> str:
    return f"rendered from the contact's data at {now:%Y-%m-%d %H:%M:%S} UTC, when its delay ended"


def kept_note(why: str) -> str:
    return f"sent as at the trigger, not rendered when its delay ended: {why}"


@dataclass(frozen=True, slots=True)
class Done:
    """What one batch did with the rows it took."""

    rendered: int = 0
    kept: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.rendered + self.kept + self.cancelled


@functools.cache
def _pick(backend: Backend) -> sa.Select[Any]:
    """The marked rows due by ``b_until``, oldest first: one range of the partial index."""
    d = deliveries.c
    columns = (d.id, d.transactionid, d.account_id, d.action_id, d.automation_id, d.contact_id,
               d.endpoint, d.state)  # fmt: skip
    due = d.next_attempt_at <= sa.bindparam("b_until", type_=sa.DateTime())
    query = (
        sa.select(*columns)
        .where(d.render_pending.is_not(None), due)
        .order_by(d.next_attempt_at, d.id)
        .limit(sa.bindparam("b_limit", type_=sa.Integer()))
    )
    return backend.skip_locked(query)


_WRITE = (
    deliveries.update()
    .where(deliveries.c.id == sa.bindparam("b_id"), deliveries.c.render_pending.is_not(None))
    .values(
        method=sa.bindparam("b_method"),
        url=sa.bindparam("b_url"),
        headers=sa.bindparam("b_headers", type_=sa.JSON()),
        body=sa.bindparam("b_body", type_=sa.LargeBinary()),
        content_type=sa.bindparam("b_content_type"),
        render_pending=None,
        render_note=sa.bindparam("b_note"),
        updated_at=sa.bindparam("b_now", type_=sa.DateTime()),
    )
)
_KEEP = (
    deliveries.update()
    .where(deliveries.c.id == sa.bindparam("b_id"), deliveries.c.render_pending.is_not(None))
    .values(render_pending=None, render_note=sa.bindparam("b_note"), updated_at=sa.bindparam("b_now"))
)


@dataclass(frozen=True, slots=True)
class _Action:
    action: ActionOut
    template: shortcodes.Template | None
    problem: str | None


def _actions(conn: sa.Connection, rt: Runtime, ids: Sequence[int]) -> dict[int, _Action]:
    """The current settings of the rows' actions, compiled against their lists' current fields."""
    found: dict[int, _Action] = {}
    rows = conn.execute(
        sa.select(actions, automations.c.list_id)
        .join(automations, automations.c.id == actions.c.automation_id)
        .where(actions.c.id.in_(sorted(ids)))
    ).all()
    for row in rows:
        action = action_from_row(row, n_fields=0)
        try:
            template = validate_settings(
                action.settings, field_keys(conn, row.list_id), country_code=rt.default_country_code
            )
        except ContactSyncError as exc:
            found[row.id] = _Action(action, None, f"the action's current settings do not compile ({exc})")
            continue
        found[row.id] = _Action(action, template, None)
    return found


def render_due(
    conn: sa.Connection, rt: Runtime, *, now: datetime, lead_s: float = LEAD_S, limit: int = BATCH
) -> Done:
    """Render up to ``limit`` deliveries whose delay ends by ``now + lead_s`` (the caller commits,
    which publishes them to the dispatchers and wakes them on PostgreSQL)."""
    picked = conn.execute(
        _pick(backend_of(conn)), {"b_until": now + timedelta(seconds=lead_s), "b_limit": limit}
    ).all()
    if not picked:
        return Done()
    keep: list[dict[str, Any]] = []
    gone: list[int] = []
    todo: list[tuple[Any, _Action]] = []
    current = _actions(conn, rt, sorted({r.action_id for r in picked if r.action_id is not None}))
    for row in picked:
        one = current.get(row.action_id) if row.action_id is not None else None
        if row.state != PENDING:
            keep.append({"b_id": row.id, "b_note": kept_note(f"it was {row.state} before its delay ended")})
        elif one is None:
            keep.append({"b_id": row.id, "b_note": kept_note("its action was deleted")})
        elif one.problem is not None:
            keep.append({"b_id": row.id, "b_note": kept_note(one.problem)})
        elif one.action.endpoint != row.endpoint:
            why = (
                f"the action now sends to {one.action.endpoint}; a delivery stays with its endpoint "
                f"({row.endpoint}), and its stored credentials never follow the action elsewhere"
            )
            keep.append({"b_id": row.id, "b_note": kept_note(why)})
        elif row.contact_id is None:
            gone.append(row.id)
        else:
            todo.append((row, one))
    writes, missing = _render(conn, rt, todo, now=now)
    gone += missing
    if writes:
        conn.execute(_WRITE, [{**w, "b_now": now} for w in writes])
    if keep:
        conn.execute(_KEEP, [{**k, "b_now": now} for k in keep])
    cancelled = 0
    if gone:
        values = {"render_pending": None, "render_note": CONTACT_GONE, "last_error": CONTACT_GONE}
        cancelled = move(conn, "cancel", deliveries.c.id.in_(gone), values, now=now).rowcount
    if writes or keep:
        notify(conn)
    return Done(rendered=len(writes), kept=len(keep), cancelled=cancelled)


def _render(
    conn: sa.Connection, rt: Runtime, todo: Sequence[tuple[Any, _Action]], *, now: datetime
) -> tuple[list[dict[str, Any]], list[int]]:
    """New request columns of each row (its own transactionid spliced in), and the rows whose
    contact is gone. Payloads are built once per distinct action options, as the event path does."""
    wanted: dict[PayloadOptions, set[int]] = defaultdict(set)
    for row, one in todo:
        wanted[payload_options(one.action.settings, rt)].add(row.contact_id)
    built: dict[PayloadOptions, dict[int, Rendered]] = {
        options: build(conn, sorted(ids), options=options, transactionids=dict.fromkeys(ids, 1))
        for options, ids in wanted.items()
    }
    writes: list[dict[str, Any]] = []
    missing: list[int] = []
    freezers: dict[tuple[int, int], Freezer] = {}
    for row, one in todo:
        rendered = built[payload_options(one.action.settings, rt)].get(row.contact_id)
        if rendered is None:
            missing.append(row.id)
            continue
        assert one.template is not None
        key = (one.action.id, row.account_id)
        freezer = freezers.get(key)
        if freezer is None:
            freezer = freezers[key] = Freezer(one.action, one.template, now=now, account_id=row.account_id)
        request = freezer.request(
            rendered,
            transactionid=row.transactionid,
            automation_id=row.automation_id,
            contact_id=row.contact_id,
            now=now,
        )
        writes.append(
            {
                "b_id": row.id,
                "b_method": request.method,
                "b_url": request.url,
                "b_headers": dict(request.headers),
                "b_body": request.body,
                "b_content_type": request.content_type,
                "b_note": rendered_note(now),
            }
        )
    return writes, missing


class Renderer:
    """The job a dispatcher runs beside its claims: one batch per call, in its own transaction;
    returns how many rows it took (the dispatcher calls again at once while there are any)."""

    def __init__(self, engine: sa.Engine, runtime: Runtime, *, lead_s: float = LEAD_S, limit: int = BATCH):
        self.engine = engine
        self.runtime = runtime
        self.lead_s = lead_s
        self.limit = limit

    def __call__(self, now: datetime) -> int:
        with self.engine.begin() as conn:
            return render_due(conn, self.runtime, now=now, lead_s=self.lead_s, limit=self.limit).total


def for_settings(settings: Settings, engine: sa.Engine) -> Callable[[datetime], int]:
    """A :class:`Renderer` for a worker process (picklable by name, for ``contactsync worker -p N``)."""
    return Renderer(engine, Runtime.create(settings, engine=engine))
