"""The contact page's "why did (or would) this contact sync?" panel, in words a marketer reads.

The facts come from :func:`contactsync.automation.explain.explain` (the engine's own predicate, so
the panel cannot disagree with what happens); this module only puts them in plain language: the
trigger, each condition with the contact's value and a pass/fail mark, the re-entry gate, the
actions' delays, one verdict sentence, and the automation's deliveries for the contact. The verdict
blames the condition that decides the outcome: a failing one none of whose groups holds anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from contactsync.automation.automations import AutomationOut, get_automation
from contactsync.automation.explain import Explanation, ShownDelivery, Step, explain
from contactsync.automation.rules import ActivityCondition, Condition, FieldCondition, Group, TriggerSpec
from contactsync.automation.runtime import Runtime
from contactsync.db.platform import actions, automations, fields
from contactsync.errors import ContactSyncError
from contactsync.web.words import OPERATOR_WORDS

SUBJECTS = {
    "email": "Email",
    "phone": "Phone",
    "status": "Status",
    "lead_score": "Lead score",
    "lead_status": "Lead status",
}
OPS = {**OPERATOR_WORDS, "matches": "matches the pattern"}
"""The builder's words (the panel quotes the pattern itself, so it needs no hint of the wildcards)."""
DID = {
    "campaign_open": ("opened a campaign", "opened campaign #{}"),
    "link_click": ("clicked a link", ""),
    "page_visit": ("visited a page", ""),
    "goal": ("reached a goal", "reached goal #{}"),
    "automation": ("went through an automation", "went through automation #{}"),
    "webhook": ("triggered a webhook", "triggered webhook #{}"),
}
WHEN = {
    "contact.created": "the contact is created",
    "contact.updated": "the contact is updated",
    "campaign.opened": "the contact opens a campaign",
    "link.clicked": "the contact clicks a link",
    "page.visited": "the contact visits a page",
    "goal.reached": "the contact reaches a goal",
    "webhook.triggered": "a webhook is triggered for the contact (by another automation's sync, or posted)",
    "lead_score.changed": "the contact's lead score changes",
}


def quoted(value: object) -> str:
    """Text in quotes (what was typed is compared exactly); numbers as they are."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return f"“{value}”"


def condition_words(node: Condition, names: Mapping[int, str]) -> str:
    """One condition (or group) as a sentence fragment: ``City is “Paris”``."""
    if isinstance(node, Group):
        return "all of these hold" if node.op == "and" else "at least one of these holds"
    if isinstance(node, FieldCondition):
        fid = node.field_id
        subject = names.get(fid, f"field #{fid}") if fid is not None else SUBJECTS[node.subject]
        if node.value is None:
            return f"{subject} {OPS[node.op]}"
        if isinstance(node.value, list):
            items = [quoted(v) for v in node.value]
            shown = ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else "".join(items)
            return f"{subject} {OPS[node.op]} {shown or '(nothing)'}"
        return f"{subject} {OPS[node.op]} {quoted(node.value)}"
    return activity_words(node)


def activity_words(cond: ActivityCondition) -> str:
    anything, one = DID[cond.kind]
    words = one.format(cond.ref_id) if cond.ref_id is not None and one else anything
    if cond.url_op is not None:
        words += f" whose address {OPS[cond.url_op]} {quoted(cond.url)}"
    words += " at least once" if cond.min_count == 1 else f" at least {cond.min_count} times"
    if cond.within_days is not None:
        words += f" in the last {cond.within_days} day{'s' if cond.within_days != 1 else ''}"
    return words


def trigger_words(spec: TriggerSpec, names: Mapping[int, str]) -> str:
    if spec.event == "manual":
        return "Only when someone runs it over the list (manual)."
    words = f"When {WHEN[spec.event]}"
    if spec.ref_id is not None:
        words += f" (only #{spec.ref_id})"
    if spec.fields:
        words += " and one of " + ", ".join(names.get(f, f"field #{f}") for f in spec.fields) + " changed"
    return words + "."


def delay_words(seconds: int) -> str:
    if seconds <= 0:
        return "sends at once"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"sends {n} {unit}{'s' if n != 1 else ''} after entry"
    return f"sends {seconds} seconds after entry"


def actual_words(step: Step) -> str:
    if step.actual is None:
        return ""
    if step.kind == "activity":
        n = step.actual.split(" ", 1)[0]
        return f"{n} time{'s' if n != '1' else ''}" if n.isdigit() else step.actual
    return quoted(step.actual) if step.actual != "" else "(empty)"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the conditions table."""

    depth: int
    words: str
    actual: str
    passed: bool
    group: bool


@dataclass(frozen=True, slots=True)
class Gate:
    policy: str
    last_entered_at: datetime | None
    open: bool
    blocks: str


@dataclass(frozen=True, slots=True)
class Panel:
    """One automation's verdict on the contact, ready for the template."""

    automation_id: int
    name: str
    active: bool
    trigger: str
    rows: tuple[Row, ...]
    gate: Gate | None
    delays: tuple[tuple[int, str], ...]
    would_enter: bool
    verdict: str
    deliveries: tuple[ShownDelivery, ...]
    problem: str = ""
    """Set when the automation cannot be explained now (an action's template no longer compiles)."""


def node_at(root: Condition, path: str) -> Condition:
    node = root
    for part in path.split(".") if path else ():
        assert isinstance(node, Group)
        node = node.conditions[int(part)]
    return node


def deciding(steps: Sequence[Step]) -> Step | None:
    """The first failing condition whose every enclosing group fails too (it decides the outcome)."""
    failed = {s.path for s in steps if s.kind == "group" and not s.result}
    for s in steps:
        if s.kind == "group" or s.result:
            continue
        parts = s.path.split(".")
        if all(".".join(parts[:i]) in failed for i in range(len(parts))):
            return s
    return None


def gate_of(expl: Explanation) -> Gate:
    g = expl.gate
    policy = {
        "once": "lets a contact in once",
        "always": "lets a contact in every time",
        "per_hours": f"lets a contact in at most once every {g.hours} hours",
    }[g.policy]
    if g.open:
        blocks = "Nothing: the next trigger lets the contact in"
    elif g.policy == "once":
        blocks = "The contact already went through; only a resend on purpose (ignoring re-entry) sends again"
    else:
        blocks = f"The last entry; open again from {g.opens_at:%Y-%m-%d %H:%M} UTC"
    return Gate(policy=policy, last_entered_at=g.last_entered_at, open=g.open, blocks=blocks)


def verdict(expl: Explanation, automation: AutomationOut, rows: Sequence[Row], steps: Sequence[Step]) -> str:
    """One sentence: would the contact enter on the next trigger, and if not, what stops it."""
    if not expl.active:
        return "No: the automation is paused, so no contact enters it."
    if not expl.matches:
        blame = deciding(steps)
        if blame is None:
            return "No: the conditions do not hold for this contact."
        row = rows[steps.index(blame)]
        if blame.kind == "activity":
            return f"No: it needs a contact who {row.words}; this contact did it {row.actual}."
        has = "no value" if row.actual == "(empty)" else row.actual
        return f"No: it needs {row.words}, and this contact has {has}."
    if not expl.gate.open:
        if expl.gate.policy == "once":
            return "No: the contact already went through, and this automation lets a contact in once."
        return f"Not yet: re-entry lets the contact in again from {expl.gate.opens_at:%Y-%m-%d %H:%M} UTC."
    if automation.trigger.event == "manual":
        return "Yes: the contact would enter on the next manual run."
    return f"Yes: the contact would enter the next time {WHEN[automation.trigger.event]}."


def panel(
    conn: sa.Connection, rt: Runtime, automation: AutomationOut, contact_id: int, names: Mapping[int, str]
) -> Panel:
    """The panel of one automation of the contact's list."""
    trigger = trigger_words(automation.trigger, names)
    active = automation.status == "active"
    try:
        expl = explain(conn, rt, automation.id, contact_id)
    except ContactSyncError as exc:
        return Panel(automation.id, automation.name, active, trigger, rows=(), gate=None, delays=(),
                     would_enter=False, verdict="", deliveries=(), problem=str(exc))  # fmt: skip
    rows = []
    for step in expl.steps:
        node = node_at(automation.conditions, step.path) if automation.conditions else None
        words = condition_words(node, names) if node is not None else step.test
        rows.append(Row(step.depth, words, actual_words(step), step.result, step.kind == "group"))
    action_ids = conn.execute(
        sa.select(actions.c.id).where(actions.c.automation_id == automation.id).order_by(actions.c.id)
    ).scalars()
    delays = tuple((int(i), delay_words(d)) for i, d in zip(action_ids, expl.delays_s, strict=False))
    return Panel(
        automation.id,
        automation.name,
        active,
        trigger,
        rows=tuple(rows),
        gate=gate_of(expl),
        delays=delays,
        would_enter=expl.would_enter,
        verdict=verdict(expl, automation, rows, expl.steps),
        deliveries=tuple(expl.deliveries),
    )


def panels(conn: sa.Connection, rt: Runtime, list_id: int, contact_id: int) -> list[Panel]:
    """Every automation of the contact's list, explained for the contact (by automation id)."""
    names = {
        int(i): str(n)
        for i, n in conn.execute(sa.select(fields.c.id, fields.c.name).where(fields.c.list_id == list_id))
    }
    ids = conn.execute(
        sa.select(automations.c.id).where(automations.c.list_id == list_id).order_by(automations.c.id)
    ).scalars()
    return [panel(conn, rt, get_automation(conn, int(i)), contact_id, names) for i in ids]
