"""Why did (or would) this contact sync? The automation's verdict on one contact, every step shown.

For one automation and one contact: whether the automation is active, what triggers it, every
condition (groups and leaves) with the contact's actual value and the result, the re-entry gate
(last entry, what blocks the next one and until when), the actions' delays, and the deliveries it
already made for the contact. The verdict uses the same compiled predicate as the event path, so
the explanation cannot disagree with what the engine does.

The dry run answers the manual-run question for a whole list without enqueueing anything: how many
contacts match now, how many of those re-entry lets in, and a sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field

from contactsync.automation.automations import Compiled, compile_automation, get_automation
from contactsync.automation.compile_sql import compile_sql
from contactsync.automation.predicate import ContactView, compile_predicate, lead_label
from contactsync.automation.rules import ActivityCondition, Condition, FieldCondition, Group, TriggerSpec
from contactsync.automation.runtime import Runtime
from contactsync.automation.snapshot import activity_needs, load_views
from contactsync.db.backend import backend_of
from contactsync.db.platform import contacts, deliveries, fields, reentry_gates
from contactsync.errors import NotFoundError

SAMPLE = 20
DELIVERIES_SHOWN = 20
DELIVERIES_SCANNED = 500
"""The contact's most recent deliveries looked through for the automation's."""


class Step(BaseModel):
    """One node of the condition tree, depth first: what it asks, what the contact has, the answer."""

    path: str = Field(description="position in the tree: '' is the root, '0.2' its first child's third")
    depth: int
    kind: Literal["group", "field", "activity"]
    test: str = Field(description="the condition in words")
    actual: str | None = Field(description="the contact's value, or how many activities count")
    result: bool


class Gate(BaseModel):
    policy: Literal["once", "always", "per_hours"]
    hours: int | None
    last_entered_at: datetime | None
    open: bool = Field(description="re-entry lets the contact in now")
    opens_at: datetime | None = Field(description="when a per_hours gate opens again")
    why: str


class ShownDelivery(BaseModel):
    id: int
    transactionid: str
    state: str
    created_at: datetime
    action_id: int | None
    cause_activity_id: int | None = Field(
        description="the webhook activity (one of the platform's own syncs) that triggered it; such a "
        "delivery triggers no automation in turn"
    )


class Explanation(BaseModel):
    automation_id: int
    contact_id: int
    active: bool
    trigger: str = Field(description="what makes the automation look at a contact")
    matches: bool = Field(description="the conditions hold for the contact now")
    steps: list[Step]
    gate: Gate
    delays_s: list[int] = Field(description="each action's delay after entry (0: sent at once)")
    would_enter: bool = Field(description="active, matching and let in by re-entry: the next trigger enters")
    verdict: str = Field(description="the reason in one sentence")
    deliveries: list[ShownDelivery] = Field(
        description="this automation's deliveries for the contact, newest first"
    )


class DryRun(BaseModel):
    automation_id: int
    total: int = Field(description="contacts in the list")
    matching: int = Field(description="contacts the conditions hold for now")
    would_enter: int = Field(description="of those, the ones re-entry lets in (all of them when ignoring it)")
    ignore_reentry: bool
    sample: list[int] = Field(description=f"ids of up to {SAMPLE} contacts that would enter")


_TRIGGERS = {
    "contact.created": "the contact is created",
    "contact.updated": "the contact is updated",
    "campaign.opened": "the contact opens a campaign",
    "link.clicked": "the contact clicks a link",
    "page.visited": "the contact visits a page",
    "goal.reached": "the contact reaches a goal",
    "webhook.triggered": "a webhook is triggered for the contact",
    "lead_score.changed": "the contact's lead score changes",
    "manual": "someone runs it over the list",
}


def _trigger_words(spec: TriggerSpec) -> str:
    words = f"enters when {_TRIGGERS[spec.event]}"
    if spec.ref_id is not None:
        words += f" (id {spec.ref_id})"
    if spec.fields:
        words += f" (fields {', '.join(str(f) for f in spec.fields)})"
    if spec.event == "webhook.triggered":
        words += (
            " — a posted event or another automation's delivered sync, never its own; a sync that such "
            "a trigger caused triggers nothing"
        )
    return words


def _words(cond: FieldCondition | ActivityCondition, names: dict[int, str]) -> str:
    if isinstance(cond, FieldCondition):
        fid = cond.field_id
        subject = names.get(fid, f"field {fid}") if fid is not None else cond.subject.replace("_", " ")
        value = "" if cond.value is None else f" {cond.value!r}"
        return f"{subject} {cond.op.replace('_', ' ')}{value}"
    what = cond.kind.replace("_", " ")
    parts = [f"{what} at least {cond.min_count} time{'s' if cond.min_count != 1 else ''}"]
    if cond.ref_id is not None:
        parts.append(f"of id {cond.ref_id}")
    if cond.url_op is not None:
        parts.append(f"with a url that {cond.url_op.replace('_', ' ')} {cond.url!r}")
    if cond.within_days is not None:
        parts.append(f"within {cond.within_days} days")
    return " ".join(parts)


def _actual(cond: FieldCondition | ActivityCondition, view: ContactView, c: Compiled, now: datetime) -> str:
    if isinstance(cond, FieldCondition):
        fid = cond.field_id
        if fid is not None:
            return view.values.get(fid, ("", None))[0]
        if cond.subject == "lead_status":
            return lead_label(view.lead_score, c.thresholds)
        return str(getattr(view, cond.subject))
    # each activity row on its own through the predicate's own filters (kind, id, url, window)
    one = compile_predicate(cond.model_copy(update={"min_count": 1}), field_types=c.field_types)
    probe = ContactView(view.id, view.email, view.phone, view.status, view.lead_score, view.values, [])
    n = 0
    for row in view.activities:
        probe.activities = [row]
        n += one(probe, now)
    return f"{n} matching"


def _steps(
    node: Condition,
    view: ContactView,
    c: Compiled,
    now: datetime,
    names: dict[int, str],
    path: str,
    depth: int,
) -> Iterator[Step]:
    result = compile_predicate(node, field_types=c.field_types, thresholds=c.thresholds)(view, now)
    if isinstance(node, Group):
        test = f"{'all' if node.op == 'and' else 'any'} of {len(node.conditions)}"
        yield Step(path=path, depth=depth, kind="group", test=test, actual=None, result=result)
        for i, child in enumerate(node.conditions):
            yield from _steps(child, view, c, now, names, f"{path}.{i}".lstrip("."), depth + 1)
        return
    kind: Literal["field", "activity"] = "field" if isinstance(node, FieldCondition) else "activity"
    actual = _actual(node, view, c, now)
    yield Step(path=path, depth=depth, kind=kind, test=_words(node, names), actual=actual, result=result)


def _deciding(node: Condition | None, by_path: dict[str, Step], path: str) -> Step | None:
    """The failing leaf that decides a failed tree: inside a failed AND its first failed child, inside a
    failed OR (every child failed) its first child — never a leaf an OR group makes up for."""
    step = by_path.get(path)
    if node is None or step is None or step.result:
        return None
    if not isinstance(node, Group):
        return step
    for i, child in enumerate(node.conditions):
        found = _deciding(child, by_path, f"{path}.{i}".lstrip("."))
        if found is not None:
            return found
    return None


def _gate(conn: sa.Connection, c: Compiled, contact_id: int, now: datetime) -> Gate:
    policy, hours = c.automation.reentry.policy, c.automation.reentry.hours
    g = reentry_gates.c
    last = conn.execute(
        sa.select(g.last_entered_at).where(g.automation_id == c.automation.id, g.contact_id == contact_id)
    ).scalar()
    opens_at = None
    if last is None:
        is_open, why = True, "never entered: the gate is open"
    elif policy == "once":
        is_open, why = False, f"entered on {last:%Y-%m-%d %H:%M} UTC; this automation lets a contact in once"
    elif policy == "per_hours":
        opens_at = last + timedelta(hours=hours or 0)
        is_open = opens_at <= now
        why = f"entered on {last:%Y-%m-%d %H:%M} UTC; again after {hours} h"
        if not is_open:
            why += f", from {opens_at:%Y-%m-%d %H:%M} UTC"
    else:
        is_open, why = True, "this automation lets a contact in every time"
    return Gate(policy=policy, hours=hours, last_entered_at=last, open=is_open, opens_at=opens_at, why=why)


def explain(conn: sa.Connection, rt: Runtime, automation_id: int, contact_id: int) -> Explanation:
    """The automation's verdict on the contact now (the contact must be in the automation's list)."""
    automation = get_automation(conn, automation_id)
    c = compile_automation(conn, rt, automation)
    now = rt.clock()
    kinds, widest = activity_needs([automation.conditions])
    since = None if widest is None or not kinds else now - timedelta(days=widest)
    views = load_views(conn, [contact_id], kinds=kinds, since=since)
    view = views.get(contact_id)
    in_list = conn.execute(sa.select(contacts.c.list_id).where(contacts.c.id == contact_id)).scalar()
    if view is None or in_list != automation.list_id:
        raise NotFoundError(f"contact {contact_id} is not in the automation's list", field="contact_id")
    named = sa.select(fields.c.id, fields.c.name).where(fields.c.list_id == automation.list_id)
    names: dict[int, str] = {int(r.id): str(r.name) for r in conn.execute(named)}
    steps = list(_steps(automation.conditions, view, c, now, names, "", 0)) if automation.conditions else []
    matches = c.predicate(view, now)
    gate = _gate(conn, c, contact_id, now)
    active = automation.status == "active"
    would = active and matches and gate.open
    if not active:
        verdict = "the automation is paused: no contact enters it"
    elif not matches:
        first = _deciding(automation.conditions, {step.path: step for step in steps}, "")
        verdict = "the conditions do not hold"
        if first is not None:
            verdict += f": {first.test} (the contact has {first.actual!r})"
    elif not gate.open:
        verdict = f"re-entry blocks it: {gate.why}"
    elif automation.trigger.event == "manual":
        verdict = "it would enter on the next manual run"
    else:
        verdict = f"it would enter the next time {_TRIGGERS[automation.trigger.event]}"
    d = deliveries.c
    # through the contact's deliveries (a handful), never the automation's (possibly millions): the
    # planner would otherwise walk (automation_id, id) when the automation is busy
    recent = conn.execute(
        sa.select(
            d.id, d.transactionid, d.state, d.created_at, d.action_id, d.automation_id, d.cause_activity_id
        )
        .where(d.contact_id == contact_id)
        .order_by(d.id.desc())
        .limit(DELIVERIES_SCANNED)
    ).all()
    sent = [r for r in recent if r.automation_id == automation_id][:DELIVERIES_SHOWN]
    return Explanation(
        automation_id=automation_id,
        contact_id=contact_id,
        active=active,
        trigger=_trigger_words(automation.trigger),
        matches=matches,
        steps=steps,
        gate=gate,
        delays_s=[ca.action.settings.delay_s for ca in c.actions],
        would_enter=would,
        verdict=verdict,
        deliveries=[
            ShownDelivery(
                id=r.id,
                transactionid=str(r.transactionid),
                state=r.state,
                created_at=r.created_at,
                action_id=r.action_id,
                cause_activity_id=r.cause_activity_id,
            )
            for r in sent
        ],
    )


def dry_run(conn: sa.Connection, rt: Runtime, automation_id: int, *, ignore_reentry: bool = False) -> DryRun:
    """What a manual run would do now, counted in the database; nothing is entered or enqueued."""
    automation = get_automation(conn, automation_id)
    c = compile_automation(conn, rt, automation)
    now = rt.clock()
    where = compile_sql(
        automation.conditions,
        backend=backend_of(conn),
        now=now,
        field_types=c.field_types,
        thresholds=c.thresholds,
    )
    in_list = contacts.c.list_id == automation.list_id
    total = conn.execute(sa.select(sa.func.count()).where(in_list)).scalar_one()
    matching = conn.execute(sa.select(sa.func.count()).where(in_list, where)).scalar_one()
    admitted: sa.ColumnElement[bool] = sa.true()
    if not ignore_reentry and automation.reentry.policy != "always":
        g = reentry_gates.c
        blocking = [g.automation_id == automation_id, g.contact_id == contacts.c.id]
        if automation.reentry.policy == "per_hours":
            blocking.append(g.last_entered_at > now - timedelta(hours=automation.reentry.hours or 0))
        admitted = ~sa.exists().where(*blocking)
    would = conn.execute(sa.select(sa.func.count()).where(in_list, where, admitted)).scalar_one()
    sample = conn.execute(
        sa.select(contacts.c.id).where(in_list, where, admitted).order_by(contacts.c.id).limit(SAMPLE)
    ).scalars()
    return DryRun(
        automation_id=automation_id,
        total=total,
        matching=matching,
        would_enter=would,
        ignore_reentry=ignore_reentry,
        sample=list(sample),
    )
