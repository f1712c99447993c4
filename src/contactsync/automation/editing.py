"""Renaming and deleting lists and fields, and changing a field's shortcode key, without breaking
what uses them.

A list is not deleted while automations run on it; a field is not deleted while a condition, a
``contact.updated`` trigger or an action's URL template uses it — the error names each user, so the
person knows what to change first. A new shortcode key is refused while templates use the old one,
unless the change asks to update them: then every ``[#…OLD…#]`` becomes ``[#…NEW…#]`` (functions and
word selectors kept) in the same transaction, so no action is ever left pointing at a missing key.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel, Field

from contactsync.automation.automations import automation_from_row
from contactsync.automation.lists import BY_ID_KEY, FieldOut, ListOut, get_list, list_fields
from contactsync.automation.rules import Group, walk
from contactsync.db.platform import actions, automations, fields, lists
from contactsync.errors import ConflictError, NotFoundError, ValidationError
from contactsync.shortcodes import BUILTIN_FIELDS
from contactsync.shortcodes.parser import Shortcode, parse


class FieldChanged(BaseModel):
    field: FieldOut
    updated_actions: list[int] = Field(description="actions whose URL template now uses the new key")


def get_field(conn: sa.Connection, field_id: int) -> FieldOut:
    row = conn.execute(sa.select(fields).where(fields.c.id == field_id)).first()
    if row is None:
        raise NotFoundError(f"field {field_id} does not exist", field="field_id")
    return FieldOut.model_validate(row._asdict())


def rename_list(conn: sa.Connection, list_id: int, name: str) -> ListOut:
    get_list(conn, list_id)
    conn.execute(lists.update().where(lists.c.id == list_id).values(name=name))
    return get_list(conn, list_id)


def delete_list(conn: sa.Connection, list_id: int) -> ListOut:
    """Delete the list with its fields and contacts; refused while automations run on it."""
    gone = get_list(conn, list_id)
    using = conn.execute(
        sa.select(automations.c.id, automations.c.name)
        .where(automations.c.list_id == list_id)
        .order_by(automations.c.id)
    ).all()
    if using:
        names = ", ".join(f"{r.name!r} (#{r.id})" for r in using)
        raise ConflictError(f"the list is used by automations {names}: delete them first", field="list_id")
    conn.execute(lists.delete().where(lists.c.id == list_id))
    return gone


def _templates(conn: sa.Connection, list_id: int) -> Iterator[tuple[int, str, str]]:
    """``(action id, automation name, URL template)`` of every action on the list."""
    rows = conn.execute(
        sa.select(actions.c.id, automations.c.name, actions.c.settings)
        .join(automations, automations.c.id == actions.c.automation_id)
        .where(automations.c.list_id == list_id)
        .order_by(actions.c.id)
    )
    for row in rows:
        yield int(row.id), str(row.name), str((row.settings or {}).get("url", ""))


def _refs(template: str, keys: set[str]) -> list[Shortcode]:
    return [n for n in parse(template) if isinstance(n, Shortcode) and n.field.name in keys]


def _field_users(conn: sa.Connection, field: FieldOut) -> list[str]:
    users: list[str] = []
    rows = conn.execute(
        sa.select(automations).where(automations.c.list_id == field.list_id).order_by(automations.c.id)
    )
    for row in rows:
        automation = automation_from_row(row)
        leaves = walk(automation.conditions) if isinstance(automation.conditions, Group) else []
        if any(getattr(leaf, "field_id", None) == field.id for leaf in leaves):
            users.append(f"the conditions of automation {automation.name!r} (#{automation.id})")
        if field.id in automation.trigger.fields:
            users.append(f"the trigger of automation {automation.name!r} (#{automation.id})")
    keys = {field.shortcode_key.upper(), f"FIELD_{field.id}"}
    for action_id, name, template in _templates(conn, field.list_id):
        if _refs(template, keys):
            users.append(f"the URL of action #{action_id} of automation {name!r}")
    return users


def delete_field(conn: sa.Connection, field_id: int) -> FieldOut:
    """Delete the field and its values; refused while anything uses it (each user named)."""
    field = get_field(conn, field_id)
    users = _field_users(conn, field)
    if users:
        raise ConflictError(f"field {field.name!r} is used by {'; '.join(users)}", field="field_id")
    conn.execute(fields.delete().where(fields.c.id == field_id))
    return field


def rewrite_key(template: str, old: str, new: str) -> str:
    """``template`` with every shortcode field named ``old`` renamed ``new`` (nothing else touched)."""
    out, at = [], 0
    for node in _refs(template, {old.upper()}):
        out.append(template[at : node.field.start])
        out.append(new + template[node.field.start + len(old) : node.field.end])
        at = node.field.end
    out.append(template[at:])
    return "".join(out)


def update_field(
    conn: sa.Connection,
    field_id: int,
    *,
    name: str | None = None,
    shortcode_key: str | None = None,
    choices: Sequence[str] | None = None,
    update_templates: bool = False,
    now: datetime,
) -> FieldChanged:
    """Rename a field, change its choices or its shortcode key (see the module docstring)."""
    field = get_field(conn, field_id)
    values: dict[str, object] = {}
    if name is not None:
        values["name"] = name
    if choices is not None:
        if field.type != "choice":
            raise ValidationError("only a choice field has choices", field="choices")
        if not choices:
            raise ValidationError("a choice field needs at least one choice", field="choices")
        values["choices"] = list(choices)
    updated: list[int] = []
    new_key = shortcode_key.upper() if shortcode_key is not None else None
    if new_key is not None and new_key != field.shortcode_key:
        taken = {f.shortcode_key for f in list_fields(conn, field.list_id) if f.id != field_id}
        if new_key in taken or new_key in BUILTIN_FIELDS or BY_ID_KEY.fullmatch(new_key):
            raise ValidationError(
                f"shortcode key {new_key!r} is already used in this list", field="shortcode_key"
            )
        users = [(a, n, t) for a, n, t in _templates(conn, field.list_id) if _refs(t, {field.shortcode_key})]
        if users and not update_templates:
            named = ", ".join(f"action #{a} of automation {n!r}" for a, n, _ in users)
            raise ConflictError(
                f"[#{field.shortcode_key}#] is used by {named}: change the key with update_templates to "
                "update them in the same step, or edit them first",
                field="shortcode_key",
            )
        values["shortcode_key"] = new_key
        for action_id, _name, template in users:
            settings = conn.execute(
                sa.select(actions.c.settings).where(actions.c.id == action_id)
            ).scalar_one()
            settings = {**settings, "url": rewrite_key(template, field.shortcode_key, new_key)}
            conn.execute(
                actions.update().where(actions.c.id == action_id).values(settings=settings, updated_at=now)
            )
            updated.append(action_id)
    if values:
        conn.execute(fields.update().where(fields.c.id == field_id).values(**values))
    return FieldChanged(field=get_field(conn, field_id), updated_actions=updated)
