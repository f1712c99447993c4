"""Accounts, lists, their typed custom fields, and lead-status thresholds.

The services take a :class:`sqlalchemy.Connection` inside the caller's transaction and typed
pydantic inputs; they raise :class:`~contactsync.errors.ValidationError` naming the field.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contactsync.automation.predicate import DEFAULT_THRESHOLDS, Thresholds
from contactsync.automation.rules import Int32, Int64
from contactsync.db.platform import accounts, fields, lead_status_thresholds, lists
from contactsync.errors import NotFoundError, ValidationError
from contactsync.shortcodes import BUILTIN_FIELDS, shortcode_key

BY_ID_KEY = re.compile(r"FIELD_[0-9]+")
"""The key every field also answers to (``FIELD_<id>``): no field may take one as its own."""

FieldType = Literal["text", "number", "date", "email", "phone", "choice"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ListIn(_In):
    account_id: Int64
    name: str = Field(min_length=1, max_length=200)


class ListOut(BaseModel):
    id: int
    account_id: int
    name: str
    created_at: datetime


class FieldIn(_In):
    list_id: Int64
    name: str = Field(min_length=1, max_length=200)
    type: FieldType = "text"
    shortcode_key: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=200)
    choices: list[str] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _choices(self) -> FieldIn:
        if (self.type == "choice") != bool(self.choices):
            raise ValueError("choices are required for a 'choice' field and only for it")
        return self


class FieldOut(BaseModel):
    id: int
    list_id: int
    name: str
    type: FieldType
    shortcode_key: str
    choices: list[str]


class Threshold(BaseModel):
    min_score: Int32
    label: str = Field(min_length=1, max_length=100)


def create_account(conn: sa.Connection, *, name: str, now: datetime) -> int:
    """A new account; its lists use the default lead-status thresholds until it sets its own."""
    return int(
        conn.execute(
            accounts.insert().values(name=name, created_at=now).returning(accounts.c.id)
        ).scalar_one()
    )


def create_list(conn: sa.Connection, data: ListIn, *, now: datetime) -> ListOut:
    if conn.execute(sa.select(accounts.c.id).where(accounts.c.id == data.account_id)).first() is None:
        raise NotFoundError(f"account {data.account_id} does not exist", field="account_id")
    row = conn.execute(
        lists.insert().values(account_id=data.account_id, name=data.name, created_at=now).returning(*lists.c)
    ).one()
    return ListOut.model_validate(row._asdict())


def get_list(conn: sa.Connection, list_id: int, *, field: str = "list_id") -> ListOut:
    row = conn.execute(sa.select(lists).where(lists.c.id == list_id)).first()
    if row is None:
        raise NotFoundError(f"list {list_id} does not exist", field=field)
    return ListOut.model_validate(row._asdict())


def create_field(conn: sa.Connection, data: FieldIn, *, now: datetime) -> FieldOut:
    """Add a custom field; its shortcode key must be unique in the list (case-insensitive)."""
    get_list(conn, data.list_id)
    taken = set(
        conn.execute(sa.select(fields.c.shortcode_key).where(fields.c.list_id == data.list_id)).scalars()
    )
    if data.shortcode_key is None:
        key = shortcode_key(data.name, taken=taken)
    else:
        key = data.shortcode_key.upper()
        if key in taken or key in BUILTIN_FIELDS or BY_ID_KEY.fullmatch(key):
            raise ValidationError(
                f"shortcode key {key!r} is already used in this list", field="shortcode_key"
            )
    row = conn.execute(
        fields.insert()
        .values(
            list_id=data.list_id,
            name=data.name,
            shortcode_key=key,
            type=data.type,
            choices=data.choices,
            created_at=now,
        )
        .returning(*fields.c)
    ).one()
    return FieldOut.model_validate(row._asdict())


def list_fields(conn: sa.Connection, list_id: int) -> list[FieldOut]:
    rows = conn.execute(sa.select(fields).where(fields.c.list_id == list_id).order_by(fields.c.id))
    return [FieldOut.model_validate(r._asdict()) for r in rows]


def account_of_list(conn: sa.Connection, list_id: int) -> int:
    return get_list(conn, list_id).account_id


def get_thresholds(conn: sa.Connection, account_id: int) -> Thresholds:
    """The account's thresholds, ascending; the defaults (Cold/Warm/Hot) when it has none."""
    rows = conn.execute(
        sa.select(lead_status_thresholds.c.min_score, lead_status_thresholds.c.label)
        .where(lead_status_thresholds.c.account_id == account_id)
        .order_by(lead_status_thresholds.c.min_score)
    ).all()
    return tuple((int(m), str(label)) for m, label in rows) or DEFAULT_THRESHOLDS


def set_thresholds(conn: sa.Connection, account_id: int, thresholds: list[Threshold]) -> Thresholds:
    """Replace the account's thresholds (at least one, distinct minimum scores)."""
    if not thresholds:
        raise ValidationError("at least one threshold is required", field="thresholds")
    if len({t.min_score for t in thresholds}) != len(thresholds):
        raise ValidationError("minimum scores must be distinct", field="thresholds")
    if conn.execute(sa.select(accounts.c.id).where(accounts.c.id == account_id)).first() is None:
        raise NotFoundError(f"account {account_id} does not exist", field="account_id")
    conn.execute(lead_status_thresholds.delete().where(lead_status_thresholds.c.account_id == account_id))
    conn.execute(
        lead_status_thresholds.insert(),
        [{"account_id": account_id, "min_score": t.min_score, "label": t.label} for t in thresholds],
    )
    return get_thresholds(conn, account_id)
