"""The event path: an ingested event evaluates the automations it can trigger, in its own transaction.

For a batch of events: insert the activity, find the active automations whose trigger fired for
the touched contacts' lists, load those contacts once, evaluate each predicate, apply re-entry
(one upsert of each contact's gate row, :mod:`~contactsync.automation.reentry`), and write one
outbox row per entered contact and action. Everything happens on the caller's connection, so the
outbox rows commit with the event or not at all. Should another process have handed out one of the
new transactionids (the outbox's unique key tells), the insert rolls back to a savepoint and is
retried once with fresh ids.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel

from contactsync.automation import reentry
from contactsync.automation.activity import (
    CampaignOpened,
    Event,
    GoalReached,
    WebhookTriggered,
    insert_activities,
    record_entries,
    resolve_contacts,
)
from contactsync.automation.automations import Compiled, automation_from_row, compile_many
from contactsync.automation.contacts import ContactIn, UpsertResult, upsert_contact
from contactsync.automation.freezing import Freezer, payload_options
from contactsync.automation.payload_builder import PayloadOptions, Rendered, build
from contactsync.automation.predicate import compile_prefilter
from contactsync.automation.rules import Reentry
from contactsync.automation.runtime import Runtime
from contactsync.automation.snapshot import (
    activity_needs,
    chunked,
    field_needs,
    load_activities,
    load_contacts,
)
from contactsync.db.bulk import insert_rows
from contactsync.db.errors import translated
from contactsync.db.platform import automation_entries, automations, contacts
from contactsync.delivery.outbox import OutboxRequest, enqueue
from contactsync.errors import DuplicateKeyError


class FireResult(BaseModel):
    """What an event batch caused: automations entered and the deliveries queued."""

    entries: int = 0
    transactionids: list[int] = []


EVERY_TIME = Reentry(policy="always")
"""The gate of a resend on purpose: everyone who matches enters, and the gate records it."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One trigger firing for one contact (``ref_id``: campaign/goal/webhook id; ``fields``: changed;
    ``not_automation``: an automation this hit must not enter — the one whose sync it records)."""

    trigger: str
    contact_id: int
    ref_id: int | None = None
    fields: frozenset[int] = field(default_factory=frozenset)
    not_automation: int | None = None


def _hit(event: Event, contact_id: int) -> Hit:
    ref = None
    if isinstance(event, CampaignOpened):
        ref = event.campaign_id
    elif isinstance(event, GoalReached):
        ref = event.goal_id
    elif isinstance(event, WebhookTriggered):
        ref = event.webhook_id
    return Hit(event.kind, contact_id, ref)


def ingest_events(conn: sa.Connection, rt: Runtime, events: Sequence[Event]) -> FireResult:
    """Store a batch of activity events and run the automations they trigger (one transaction)."""
    ids = resolve_contacts(conn, events)
    now = rt.clock()
    insert_activities(conn, events, ids, now=now)
    return fire(conn, rt, [_hit(e, cid) for e, cid in zip(events, ids, strict=True)], now=now)


def save_contact(conn: sa.Connection, rt: Runtime, data: ContactIn) -> tuple[UpsertResult, FireResult]:
    """Upsert a contact and fire ``contact.created`` / ``contact.updated`` (only on a real change)."""
    now = rt.clock()
    result = upsert_contact(conn, data, now=now)
    if result.created:
        hit = Hit("contact.created", result.contact.id)
    elif result.changed:
        hit = Hit("contact.updated", result.contact.id, fields=frozenset(result.changed_fields))
    else:
        return result, FireResult()
    return result, fire(conn, rt, [hit], now=now)


def fire(conn: sa.Connection, rt: Runtime, hits: Sequence[Hit], *, now: datetime) -> FireResult:
    """Evaluate the automations ``hits`` can trigger and enqueue the matches."""
    if not hits:
        return FireResult()
    contact_ids = sorted({h.contact_id for h in hits})
    list_of: dict[int, int] = {}
    for part in chunked(contact_ids):
        list_of.update(
            conn.execute(sa.select(contacts.c.id, contacts.c.list_id).where(contacts.c.id.in_(part))).all()
        )
    rows = conn.execute(
        sa.select(automations)
        .where(
            automations.c.status == "active",
            automations.c.trigger.in_(sorted({h.trigger for h in hits})),
            automations.c.list_id.in_(sorted(set(list_of.values()))),
        )
        .order_by(automations.c.id)
    ).all()
    if not rows:
        return FireResult()
    by_trigger: dict[str, list[Hit]] = defaultdict(list)
    for h in hits:
        by_trigger[h.trigger].append(h)
    candidates: dict[int, list[int]] = {}
    wanted = []
    for row in rows:
        auto = automation_from_row(row)
        spec, lst = auto.trigger, auto.list_id
        chosen = {
            h.contact_id
            for h in by_trigger[spec.event]
            if list_of.get(h.contact_id) == lst
            and (spec.ref_id is None or spec.ref_id == h.ref_id)
            and (not spec.fields or not h.fields.isdisjoint(spec.fields))
            and h.not_automation != auto.id
        }
        if chosen:
            candidates[auto.id] = sorted(chosen)
            wanted.append(auto)
    if not candidates:
        return FireResult()
    compiled = compile_many(conn, rt, wanted)
    everyone = sorted({cid for ids in candidates.values() for cid in ids})
    views = load_contacts(conn, everyone, field_ids=field_needs([c.automation.conditions for c in compiled]))
    # decide on contact data first; load activity only for contacts it leaves undecided
    decided: dict[int, list[int]] = {}
    undecided: dict[int, list[int]] = {}
    for c in compiled:
        pre = compile_prefilter(c.automation.conditions, field_types=c.field_types, thresholds=c.thresholds)
        yes, maybe = [], []
        for cid in candidates[c.automation.id]:
            view = views.get(cid)
            verdict = None if view is None else pre(view, now)
            if verdict is None and view is not None:
                maybe.append(cid)
            elif verdict:
                yes.append(cid)
        decided[c.automation.id], undecided[c.automation.id] = yes, maybe
    pending = [c for c in compiled if undecided[c.automation.id]]
    if pending:
        kinds, widest = activity_needs([c.automation.conditions for c in pending])
        since = None if widest is None or not kinds else now - timedelta(days=widest)
        load_activities(
            conn,
            views,
            sorted({cid for c in pending for cid in undecided[c.automation.id]}),
            kinds=kinds,
            since=since,
        )
    groups = [
        (
            c,
            sorted(
                decided[c.automation.id]
                + [cid for cid in undecided[c.automation.id] if c.predicate(views[cid], now)]
            ),
        )
        for c in compiled
    ]
    entered = enter_many(conn, rt, groups, now=now)
    return FireResult(entries=len(entered.contact_ids), transactionids=entered.transactionids)


@dataclass(slots=True)
class Entered:
    contact_ids: list[int] = field(default_factory=list)
    transactionids: list[int] = field(default_factory=list)


def _admit(
    conn: sa.Connection,
    compiled: Compiled,
    contact_ids: Sequence[int],
    *,
    now: datetime,
    manual_run_id: int | None,
    ignore_reentry: bool = False,
) -> list[int]:
    """Re-entry policy, decided by the database (:mod:`.reentry`); returns the contacts that enter now
    and writes their entries. ``ignore_reentry`` lets everyone in (a resend on purpose); the gates
    still record the entry, so the policy holds again afterwards."""
    a = compiled.automation
    policy = EVERY_TIME if ignore_reentry else a.reentry
    admitted = reentry.admit(conn, a.id, policy, contact_ids, now=now)
    # the gate decided; the entries' unique key still refuses a second `once` entry outright
    once_key = 0 if policy.policy == "once" else None
    insert_rows(
        conn,
        automation_entries,
        [
            {
                "automation_id": a.id,
                "account_id": compiled.account_id,
                "contact_id": cid,
                "entered_at": now,
                "once_key": once_key,
                "manual_run_id": manual_run_id,
            }
            for cid in admitted
        ],
    )
    return admitted


def enter(
    conn: sa.Connection,
    rt: Runtime,
    compiled: Compiled,
    contact_ids: Sequence[int],
    *,
    now: datetime,
    manual_run_id: int | None = None,
    ignore_reentry: bool = False,
) -> Entered:
    """Let matching contacts into the automation (re-entry permitting, unless ``ignore_reentry``)
    and enqueue its actions."""
    return enter_many(
        conn,
        rt,
        [(compiled, contact_ids)],
        now=now,
        manual_run_id=manual_run_id,
        ignore_reentry=ignore_reentry,
    )


def enter_many(
    conn: sa.Connection,
    rt: Runtime,
    groups: Sequence[tuple[Compiled, Sequence[int]]],
    *,
    now: datetime,
    manual_run_id: int | None = None,
    ignore_reentry: bool = False,
) -> Entered:
    """:func:`enter` for several automations at once: payloads are built once per distinct action
    options for all the contacts that need them, then stamped with each delivery's transactionid."""
    admitted: list[tuple[Compiled, list[int]]] = []
    for compiled, ids in groups:
        if ids:
            got = _admit(
                conn, compiled, ids, now=now, manual_run_id=manual_run_id, ignore_reentry=ignore_reentry
            )
            if got:
                admitted.append((compiled, got))
    if not admitted:
        return Entered()
    record_entries(
        conn, [(cid, c.automation.id, c.automation.name) for c, ids in admitted for cid in ids], now=now
    )
    needed: dict[PayloadOptions, set[int]] = defaultdict(set)
    for c, ids in admitted:
        for ca in c.actions:
            needed[payload_options(ca.action.settings, rt)].update(ids)
    built = {
        options: build(conn, sorted(ids), options=options, transactionids=_Placeholder())
        for options, ids in needed.items()
    }
    result = Entered()
    pending: list[_Pending] = []
    # actions with the same options and encoding share each contact's encoded body
    bodies: dict[tuple[PayloadOptions, str, str], dict[int, tuple[bytes, str]]] = defaultdict(dict)
    for c, ids in admitted:
        result.contact_ids.extend(ids)
        for ca in c.actions:
            options = payload_options(ca.action.settings, rt)
            rendered = built[options]
            freezer = Freezer(
                ca.action, ca.template, now=now, account_id=c.account_id, automation_name=c.automation.name
            )
            shared = bodies[(options, ca.action.settings.method, ca.action.settings.content_type)]
            for cid in ids:
                one = rendered.get(cid)
                if one is None:
                    continue  # deleted meanwhile
                body = shared.get(cid)
                if body is None:
                    body = shared[cid] = freezer.body(one)
                pending.append(_Pending(freezer, one, body, c.automation.id, cid))
    requests = _enqueue_with_fresh_ids(conn, rt, pending, now=now)
    result.transactionids.extend(r.transactionid for r in requests)
    return result


@dataclass(frozen=True, slots=True)
class _Pending:
    """A delivery waiting for its transactionid."""

    freezer: Freezer
    rendered: Rendered
    body: tuple[bytes, str]
    automation_id: int
    contact_id: int


def _enqueue_with_fresh_ids(
    conn: sa.Connection, rt: Runtime, pending: Sequence[_Pending], *, now: datetime
) -> list[OutboxRequest]:
    """Enqueue with new transactionids; if another process handed out one of them first (the unique
    key says so), roll back to the savepoint and try once more with fresh ids."""
    for attempt in (1, 2):
        requests = [
            p.freezer.request(
                p.rendered,
                transactionid=rt.ids.next(),
                body=p.body,
                automation_id=p.automation_id,
                contact_id=p.contact_id,
                now=now,
            )
            for p in pending
        ]
        if not requests:
            return requests
        try:
            with translated(), conn.begin_nested():
                enqueue(conn, requests, now=now)
        except DuplicateKeyError as exc:
            if attempt == 2 or "transactionid" not in exc.detail:
                raise
            continue
        return requests
    raise AssertionError("unreachable")


class _Placeholder(dict[int, int]):
    """Transactionid 1 for every contact; each delivery's own is spliced in by the :class:`Freezer`."""

    def __missing__(self, key: int) -> int:
        return 1


def entries_by_automation(conn: sa.Connection, contact_id: int) -> dict[int, list[datetime]]:
    """When the contact entered each automation (for the API's contact view)."""
    out: dict[int, list[datetime]] = defaultdict(list)
    for aid, at in conn.execute(
        sa.select(automation_entries.c.automation_id, automation_entries.c.entered_at)
        .where(automation_entries.c.contact_id == contact_id)
        .order_by(automation_entries.c.entered_at)
    ):
        out[aid].append(at)
    return dict(out)
