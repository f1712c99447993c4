"""Automations: create/update with validation against the list's fields, and loading them compiled.

A stored definition is checked on save (fields exist, operators fit the field type, arguments
parse), so both compilers can assume it is well formed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from contactsync import shortcodes
from contactsync.automation.action_settings import validate_settings
from contactsync.automation.actions import ActionOut, action_from_row
from contactsync.automation.lists import account_of_list, list_fields
from contactsync.automation.predicate import DEFAULT_THRESHOLDS, Predicate, Thresholds, compile_predicate
from contactsync.automation.rules import (
    BUILTIN_SUBJECTS,
    ORDERED_OPS,
    TEXT_OPS,
    Condition,
    FieldCondition,
    Group,
    Int64,
    Reentry,
    TriggerSpec,
    depth,
)
from contactsync.automation.runtime import Runtime
from contactsync.db.platform import actions, automations, fields, lead_status_thresholds, lists
from contactsync.delivery.interventions import cancel_for_actions
from contactsync.errors import NotFoundError, ValidationError

MAX_DEPTH = 10
_DATE_ARG = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S")


class AutomationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    list_id: Int64
    name: str = Field(min_length=1, max_length=200)
    trigger: TriggerSpec
    conditions: Group | None = None
    reentry: Reentry = Field(default_factory=Reentry)
    status: Literal["active", "paused"] = "active"


class AutomationOut(AutomationIn):
    id: int
    created_at: datetime
    updated_at: datetime


def _check_conditions(node: Condition, types: Mapping[int, str], path: str) -> None:
    if isinstance(node, Group):
        for i, child in enumerate(node.conditions):
            _check_conditions(child, types, f"{path}.conditions[{i}]")
        return
    if not isinstance(node, FieldCondition):
        return
    fid = node.field_id
    if fid is not None and fid not in types:
        raise NotFoundError(f"the list has no field {fid}", field=f"{path}.subject")
    kind = types[fid] if fid is not None else BUILTIN_SUBJECTS[node.subject]
    ops = ORDERED_OPS if kind in {"number", "date"} else TEXT_OPS
    if node.op not in ops:
        raise ValidationError(f"operator {node.op!r} does not apply to a {kind} value", field=f"{path}.op")
    args = node.value if isinstance(node.value, list) else [] if node.value is None else [node.value]
    for arg in args:
        if kind == "number":
            try:
                float(arg)
            except ValueError:
                raise ValidationError(f"{arg!r} is not a number", field=f"{path}.value") from None
        if kind == "date" and not _is_date(str(arg)):
            raise ValidationError(
                f"{arg!r} is not a date (YYYY-MM-DD or YYYY-MM-DD HH:MM:SS)", field=f"{path}.value"
            )


def _is_date(text: str) -> bool:
    for fmt in _DATE_ARG:
        try:
            if datetime.strptime(text, fmt).strftime(fmt) == text:
                return True
        except ValueError:
            continue
    return False


def _validate(conn: sa.Connection, data: AutomationIn) -> None:
    account_of_list(conn, data.list_id)
    types = {f.id: f.type for f in list_fields(conn, data.list_id)}
    for fid in data.trigger.fields:
        if fid not in types:
            raise NotFoundError(f"the list has no field {fid}", field="trigger.fields")
    if data.conditions is not None:
        if depth(data.conditions) > MAX_DEPTH:
            raise ValidationError(f"conditions nest deeper than {MAX_DEPTH} levels", field="conditions")
        _check_conditions(data.conditions, types, "conditions")


def _values(data: AutomationIn) -> dict[str, object]:
    return {
        "list_id": data.list_id,
        "name": data.name,
        "trigger": data.trigger.event,
        "trigger_fields": data.trigger.fields,
        "trigger_filter": {"ref_id": data.trigger.ref_id} if data.trigger.ref_id is not None else {},
        "conditions": data.conditions.model_dump(mode="json") if data.conditions is not None else None,
        "reentry": data.reentry.policy,
        "reentry_hours": data.reentry.hours,
        "status": data.status,
    }


def create_automation(conn: sa.Connection, rt: Runtime, data: AutomationIn) -> AutomationOut:
    _validate(conn, data)
    now = rt.clock()
    new_id = conn.execute(
        automations.insert()
        .values(**_values(data), created_at=now, updated_at=now)
        .returning(automations.c.id)
    ).scalar_one()
    return get_automation(conn, int(new_id))


def update_automation(
    conn: sa.Connection, rt: Runtime, automation_id: int, data: AutomationIn
) -> AutomationOut:
    current = get_automation(conn, automation_id)
    if data.list_id != current.list_id:
        raise ValidationError("an automation cannot move to another list", field="list_id")
    _validate(conn, data)
    conn.execute(
        automations.update()
        .where(automations.c.id == automation_id)
        .values(**_values(data), updated_at=rt.clock())
    )
    return get_automation(conn, automation_id)


def automation_from_row(row: sa.Row[tuple[object, ...]]) -> AutomationOut:
    m = row._mapping
    ref = (m["trigger_filter"] or {}).get("ref_id")
    return AutomationOut(
        id=m["id"],
        list_id=m["list_id"],
        name=m["name"],
        trigger=TriggerSpec(event=m["trigger"], fields=m["trigger_fields"] or [], ref_id=ref),
        conditions=Group.model_validate(m["conditions"]) if m["conditions"] else None,
        reentry=Reentry(policy=m["reentry"], hours=m["reentry_hours"]),
        status=m["status"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def get_automation(conn: sa.Connection, automation_id: int) -> AutomationOut:
    row = conn.execute(sa.select(automations).where(automations.c.id == automation_id)).first()
    if row is None:
        raise NotFoundError(f"automation {automation_id} does not exist", field="automation_id")
    return automation_from_row(row)


def list_automations(conn: sa.Connection, *, list_id: int | None = None) -> list[AutomationOut]:
    query = sa.select(automations).order_by(automations.c.id)
    if list_id is not None:
        query = query.where(automations.c.list_id == list_id)
    return [automation_from_row(r) for r in conn.execute(query)]


def delete_automation(conn: sa.Connection, automation_id: int, *, now: datetime) -> int:
    """Delete with its actions, entries and runs (cascade); the actions' pending deliveries are
    cancelled (they could not be signed any more). Returns how many were cancelled."""
    ids = conn.execute(sa.select(actions.c.id).where(actions.c.automation_id == automation_id)).scalars()
    cancelled = cancel_for_actions(conn, list(ids), now=now)
    if conn.execute(automations.delete().where(automations.c.id == automation_id)).rowcount == 0:
        raise NotFoundError(f"automation {automation_id} does not exist", field="automation_id")
    return cancelled


@dataclass(frozen=True, slots=True)
class CompiledAction:
    action: ActionOut
    template: shortcodes.Template


@dataclass(frozen=True, slots=True)
class Compiled:
    """An automation ready to evaluate: its predicate, field types, thresholds and compiled actions."""

    automation: AutomationOut
    predicate: Predicate
    field_types: Mapping[int, str]
    thresholds: Thresholds
    actions: tuple[CompiledAction, ...]
    account_id: int
    """The owning account, stamped on its entries and deliveries."""


def compile_automation(conn: sa.Connection, rt: Runtime, automation: AutomationOut) -> Compiled:
    """One automation ready to evaluate."""
    return compile_many(conn, rt, [automation])[0]


def compile_many(conn: sa.Connection, rt: Runtime, autos: Sequence[AutomationOut]) -> list[Compiled]:
    """Compile automations with four queries in all (fields, lists, thresholds, actions)."""
    if not autos:
        return []
    list_ids = sorted({a.list_id for a in autos})
    defs: dict[int, list[sa.Row[Any]]] = defaultdict(list)
    for row in conn.execute(sa.select(fields).where(fields.c.list_id.in_(list_ids)).order_by(fields.c.id)):
        defs[row.list_id].append(row)
    account_of: dict[int, int] = dict(
        conn.execute(sa.select(lists.c.id, lists.c.account_id).where(lists.c.id.in_(list_ids))).all()
    )
    levels: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for account_id, min_score, label in conn.execute(
        sa.select(
            lead_status_thresholds.c.account_id,
            lead_status_thresholds.c.min_score,
            lead_status_thresholds.c.label,
        )
        .where(lead_status_thresholds.c.account_id.in_(sorted(set(account_of.values()))))
        .order_by(lead_status_thresholds.c.min_score)
    ):
        levels[account_id].append((min_score, label))
    by_automation: dict[int, list[sa.Row[Any]]] = defaultdict(list)
    for row in conn.execute(
        sa.select(actions).where(actions.c.automation_id.in_([a.id for a in autos])).order_by(actions.c.id)
    ):
        by_automation[row.automation_id].append(row)
    out = []
    for a in autos:
        types = {f.id: f.type for f in defs[a.list_id]}
        keys = [f.shortcode_key for f in defs[a.list_id]] + [f"FIELD_{f.id}" for f in defs[a.list_id]]
        thresholds = tuple(levels.get(account_of[a.list_id], ())) or DEFAULT_THRESHOLDS
        compiled = []
        for row in by_automation[a.id]:
            action = action_from_row(row, n_fields=len(types))
            template = validate_settings(action.settings, keys, country_code=rt.default_country_code)
            compiled.append(CompiledAction(action, template))
        predicate = compile_predicate(a.conditions, field_types=types, thresholds=thresholds)
        out.append(Compiled(a, predicate, types, thresholds, tuple(compiled), account_of[a.list_id]))
    return out
