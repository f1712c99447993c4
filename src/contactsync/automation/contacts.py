"""Contacts: upsert by email within a list, typed custom-field values, lead status.

The email is unique per list case-insensitively because the lower-cased ``email_key`` carries the
unique key; concurrent upserts of one email therefore converge on one row.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from contactsync.automation.lists import FieldOut, account_of_list, get_thresholds, list_fields
from contactsync.automation.predicate import lead_label
from contactsync.automation.rules import Int64
from contactsync.db.platform import contacts, field_values
from contactsync.db.platform import fields as fields_table
from contactsync.errors import NotFoundError, ValidationError

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE_RE = re.compile(r"^\+?[0-9 ()./-]{3,40}$")
_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S")


class ContactIn(BaseModel):
    """Create or update (by email, within ``list_id``); ``fields`` by id or shortcode key, ``None`` clears."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    list_id: Int64
    email: str = Field(min_length=3, max_length=320)
    phone: str | None = Field(default=None, max_length=64)
    status: str | None = Field(default=None, min_length=1, max_length=32)
    fields: dict[str, str | bool | int | float | None] = Field(default_factory=dict)


class FieldValueOut(BaseModel):
    id: int
    name: str
    value: str


class ContactOut(BaseModel):
    id: int
    list_id: int
    email: str
    phone: str
    status: str
    lead_score: int
    lead_status: str
    created_at: datetime
    updated_at: datetime
    fields: list[FieldValueOut]


class UpsertResult(BaseModel):
    contact: ContactOut
    created: bool
    changed_fields: list[int] = Field(description="ids of custom fields whose value changed")
    changed: bool = Field(description="anything changed (built-ins or fields)")


def _number_text(x: float) -> str:
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def coerce_value(fld: FieldOut, raw: Any, *, path: str) -> tuple[str, float | None]:
    """Check ``raw`` against the field's type; return its canonical text and numeric copy."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValidationError(
            f"{fld.name}: expected a {fld.type} value, got {type(raw).__name__}", field=path
        )
    if fld.type == "number":
        try:
            num = float(raw)
        except ValueError:
            raise ValidationError(f"{fld.name}: {raw!r} is not a number", field=path) from None
        if not math.isfinite(num):
            raise ValidationError(f"{fld.name}: numbers must be finite", field=path)
        return _number_text(num), num
    if not isinstance(raw, str):
        raise ValidationError(f"{fld.name}: expected text for a {fld.type} field, got a number", field=path)
    text = raw.strip()
    if fld.type == "date":
        return _canonical_date(text, fld, path), None
    if fld.type == "email" and not EMAIL_RE.match(text):
        raise ValidationError(f"{fld.name}: {text!r} is not an email address", field=path)
    if fld.type == "phone" and not PHONE_RE.match(text):
        raise ValidationError(f"{fld.name}: {text!r} is not a phone number", field=path)
    if fld.type == "choice" and text not in fld.choices:
        raise ValidationError(f"{fld.name}: {text!r} is not one of {fld.choices}", field=path)
    return raw if fld.type == "text" else text, None


def _canonical_date(text: str, fld: FieldOut, path: str) -> str:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).strftime(fmt)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            f"{fld.name}: {text!r} is not a date (YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or ISO 8601)", field=path
        ) from None
    if parsed.tzinfo is not None:
        parsed = _to_utc(parsed)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def _to_utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    assert offset is not None
    return (value - offset).replace(tzinfo=None)


def _resolve_fields(data: ContactIn, defs: list[FieldOut]) -> dict[int, tuple[str, float | None] | None]:
    by_id = {str(f.id): f for f in defs}
    by_key = {f.shortcode_key.upper(): f for f in defs}
    out: dict[int, tuple[str, float | None] | None] = {}
    for name, raw in data.fields.items():
        fld = by_id.get(name) or by_key.get(name.upper())
        path = f"fields.{name}"
        if fld is None:
            raise NotFoundError(f"list {data.list_id} has no field {name!r}", field=path)
        out[fld.id] = None if raw is None or raw == "" else coerce_value(fld, raw, path=path)
    return out


def upsert_contact(conn: sa.Connection, data: ContactIn, *, now: datetime) -> UpsertResult:
    """Create the contact, or update the one with this email (any case) in the list."""
    defs = list_fields(conn, data.list_id) if data.fields else []
    account_of_list(conn, data.list_id)  # raises NotFoundError(field="list_id")
    if not EMAIL_RE.match(data.email):
        raise ValidationError(f"{data.email!r} is not an email address", field="email")
    if data.phone and not PHONE_RE.match(data.phone):
        raise ValidationError(f"{data.phone!r} is not a phone number", field="phone")
    values = _resolve_fields(data, defs)
    key = data.email.lower()
    existing = conn.execute(
        sa.select(contacts).where(contacts.c.list_id == data.list_id, contacts.c.email_key == key)
    ).first()
    created = existing is None
    changed = created
    if existing is None:
        contact_id = int(
            conn.execute(
                contacts.insert()
                .values(
                    list_id=data.list_id,
                    email=data.email,
                    email_key=key,
                    phone=data.phone or "",
                    status=data.status or "subscribed",
                    lead_score=0,
                    created_at=now,
                    updated_at=now,
                )
                .returning(contacts.c.id)
            ).scalar_one()
        )
    else:
        contact_id = existing.id
        updates = {
            k: v
            for k, v in {"email": data.email, "phone": data.phone, "status": data.status}.items()
            if v is not None and v != getattr(existing, k)
        }
        if updates:
            changed = True
            conn.execute(
                contacts.update().where(contacts.c.id == contact_id).values(**updates, updated_at=now)
            )
    changed_fields = _write_values(conn, contact_id, values)
    if changed_fields and not changed:
        changed = True
        conn.execute(contacts.update().where(contacts.c.id == contact_id).values(updated_at=now))
    return UpsertResult(
        contact=get_contact(conn, contact_id), created=created, changed_fields=changed_fields, changed=changed
    )


def _write_values(
    conn: sa.Connection, contact_id: int, values: dict[int, tuple[str, float | None] | None]
) -> list[int]:
    if not values:
        return []
    current = {
        fid: (value, num)
        for fid, value, num in conn.execute(
            sa.select(field_values.c.field_id, field_values.c.value, field_values.c.value_num).where(
                field_values.c.contact_id == contact_id, field_values.c.field_id.in_(list(values))
            )
        )
    }
    changed: list[int] = []
    for fid, new in sorted(values.items()):
        old = current.get(fid)
        if old == new:
            continue
        changed.append(fid)
        where = (field_values.c.contact_id == contact_id, field_values.c.field_id == fid)
        if new is None:
            conn.execute(field_values.delete().where(*where))
        elif old is None:
            conn.execute(
                field_values.insert().values(
                    contact_id=contact_id, field_id=fid, value=new[0], value_num=new[1]
                )
            )
        else:
            conn.execute(field_values.update().where(*where).values(value=new[0], value_num=new[1]))
    return changed


def get_contact(conn: sa.Connection, contact_id: int, *, field: str = "contact_id") -> ContactOut:
    row = conn.execute(sa.select(contacts).where(contacts.c.id == contact_id)).first()
    if row is None:
        raise NotFoundError(f"contact {contact_id} does not exist", field=field)
    values = conn.execute(
        sa.select(fields_table.c.id, fields_table.c.name, field_values.c.value)
        .join(field_values, field_values.c.field_id == fields_table.c.id)
        .where(field_values.c.contact_id == contact_id)
        .order_by(fields_table.c.id)
    )
    thresholds = get_thresholds(conn, account_of_list(conn, row.list_id))
    return ContactOut(
        id=row.id,
        list_id=row.list_id,
        email=row.email,
        phone=row.phone,
        status=row.status,
        lead_score=row.lead_score,
        lead_status=lead_label(row.lead_score, thresholds),
        created_at=row.created_at,
        updated_at=row.updated_at,
        fields=[FieldValueOut(id=i, name=n, value=v) for i, n, v in values],
    )


def find_contact(conn: sa.Connection, *, list_id: int, email: str) -> int | None:
    """Id of the contact with this email (any case) in the list."""
    found = conn.execute(
        sa.select(contacts.c.id).where(contacts.c.list_id == list_id, contacts.c.email_key == email.lower())
    ).scalar()
    return None if found is None else int(found)


def delete_contact(conn: sa.Connection, contact_id: int) -> None:
    """Delete the contact with its values and activity (cascades); deliveries already queued stay."""
    if conn.execute(contacts.delete().where(contacts.c.id == contact_id)).rowcount == 0:
        raise NotFoundError(f"contact {contact_id} does not exist", field="contact_id")
