"""Bulk contact import: CSV or NDJSON bodies parsed into the contact service's input, all or nothing.

CSV: a header row; ``email`` is required, ``phone`` and ``status`` are the built-ins, every other
column is a custom field (shortcode key or id). An empty cell leaves the value as it is (a CSV
cannot tell "empty" from "absent"); NDJSON rows can clear a field with ``null``. Every row is
parsed before anything is written, and the caller writes all rows in one transaction, so a bad
row anywhere leaves the list untouched.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from contactsync.automation.contacts import ContactIn
from contactsync.automation.events import save_contact
from contactsync.automation.runtime import Runtime
from contactsync.errors import ValidationError

MAX_ROWS = 50_000
CSV_TYPES = frozenset({"text/csv", "application/csv"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
BUILTIN_COLUMNS = ("email", "phone", "status")


class ContactRow(BaseModel):
    """One contact of an import (and the body of an upsert): the contact service's input minus the list."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: str = Field(min_length=3, max_length=320)
    phone: str | None = Field(default=None, max_length=64)
    status: str | None = Field(default=None, min_length=1, max_length=32)
    fields: dict[str, str | int | float | None] = Field(
        default_factory=dict, description="custom field values by shortcode key or id; null clears"
    )

    def to_input(self, list_id: int) -> ContactIn:
        return ContactIn(list_id=list_id, **self.model_dump())


class ImportResult(BaseModel):
    rows: int
    created: int
    updated: int
    unchanged: int
    entries: int = Field(description="contacts that entered an automation because of the import")
    deliveries: int = Field(description="outbox rows written")


def store(conn: sa.Connection, runtime: Runtime, list_id: int, rows: list[ContactRow]) -> ImportResult:
    """Upsert ``rows`` into the list inside the caller's transaction (the API's and the admin UI's
    imports); a row the contact service refuses raises with its index, so the caller rolls back all."""
    result = ImportResult(rows=len(rows), created=0, updated=0, unchanged=0, entries=0, deliveries=0)
    for i, row in enumerate(rows):
        try:
            saved, fired = save_contact(conn, runtime, row.to_input(list_id))
        except ValidationError as exc:
            raise type(exc)(f"rows[{i}]: {exc}", field=f"rows[{i}].{exc.field}".rstrip(".")) from exc
        if saved.created:
            result.created += 1
        elif saved.changed:
            result.updated += 1
        else:
            result.unchanged += 1
        result.entries += fired.entries
        result.deliveries += len(fired.transactionids)
    return result


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse(body: bytes, content_type: str) -> list[ContactRow]:
    """The rows of a CSV or NDJSON body; ValidationError names the first bad row and field."""
    kind = media_type(content_type)
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"the body is not UTF-8 (byte {exc.start})", field="body") from None
    if kind in CSV_TYPES:
        raw = _csv_rows(text)
    elif kind in NDJSON_TYPES:
        raw = _ndjson_rows(text)
    else:
        raise ValidationError(
            f"unsupported content type {kind!r}: send text/csv or application/x-ndjson", field="content-type"
        )
    if len(raw) > MAX_ROWS:
        raise ValidationError(f"at most {MAX_ROWS} rows per import", field="body")
    rows = []
    for i, (line, data) in enumerate(raw):
        try:
            rows.append(ContactRow.model_validate(data))
        except pydantic.ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise ValidationError(
                f"line {line}: {where or 'row'}: {problem['msg']}", field=f"rows[{i}].{where}".rstrip(".")
            ) from None
    return rows


def _csv_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return []
        names = [h.strip() for h in header]
        lowered = [n.lower() for n in names]
        if "email" not in lowered:
            raise ValidationError("the CSV header has no 'email' column", field="email")
        if "" in names or len(set(lowered)) != len(lowered):
            raise ValidationError("CSV column names must be non-empty and distinct", field="header")
        out: list[tuple[int, dict[str, Any]]] = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(names):
                raise ValidationError(
                    f"line {reader.line_num}: {len(cells)} cells for {len(names)} columns",
                    field=f"rows[{len(out)}]",
                )
            row: dict[str, Any] = {"fields": {}}
            for name, low, cell in zip(names, lowered, cells, strict=True):
                if low in BUILTIN_COLUMNS:
                    row[low] = cell if cell.strip() or low == "email" else None
                elif cell.strip():
                    row["fields"][name] = cell
            out.append((reader.line_num, row))
        return out
    except csv.Error as exc:
        raise ValidationError(f"line {reader.line_num}: malformed CSV: {exc}", field="body") from None


def _ndjson_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    out: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ValidationError(f"line {number}: not JSON: {exc}", field=f"rows[{len(out)}]") from None
        if not isinstance(data, dict):
            raise ValidationError(
                f"line {number}: each line must be a JSON object", field=f"rows[{len(out)}]"
            )
        out.append((number, data))
    return out
