"""CSV columns → a list's contact fields by the names people see, and every row checked before a write.

A spreadsheet's header says ``First name`` where the API says ``FIRST_NAME``: a column matches a
field by its name or its shortcode key, ignoring case, spaces, ``_`` and ``-``; an exact name beats a
key, and two fields a header matches equally well make it ambiguous rather than a guess. The UI's
import page guesses its mapping this way and lets the person correct it; the CLI renames its CSV's
headers this way before the rows reach the contact service (which knows ids and keys only).

:func:`check` validates every row against the fields as the contact service would (email, phone,
each field's type and choices) and returns *all* problems with row and column, so a person fixes
the file once instead of one error per try. Pure: data in, data out.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from contactsync.automation.contacts import EMAIL_RE, PHONE_RE, coerce_value
from contactsync.automation.imports import MAX_ROWS, ContactRow
from contactsync.automation.lists import FieldOut
from contactsync.errors import ValidationError

IGNORE = ""
BUILTINS = {"email": "Email", "phone": "Phone", "status": "Status"}
"""Targets that are not custom fields, with the label a person sees."""
STATUS_MAX = 32
PHONE_MAX = 64
EMAIL_MAX = 320
_SEPARATORS = re.compile(r"[\s_\-]+")


def normalize(name: str) -> str:
    """``First name``, ``FIRST_NAME`` and ``first-name`` all become ``firstname``."""
    return _SEPARATORS.sub("", name).casefold()


def _collapsed(name: str) -> str:
    return " ".join(name.split()).casefold()


def match_field(header: str, defs: Sequence[FieldOut]) -> FieldOut | None:
    """The field ``header`` names, best match first; ValidationError when two fields match equally."""
    name, key, plain = _collapsed(header), header.strip().upper(), normalize(header)
    tiers: tuple[Callable[[FieldOut], bool], ...] = (
        lambda f: _collapsed(f.name) == name,
        lambda f: f.shortcode_key.upper() == key or str(f.id) == key,
        lambda f: normalize(f.name) == plain,
        lambda f: normalize(f.shortcode_key) == plain,
    )
    for tier in tiers:
        found = [f for f in defs if tier(f)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(repr(f.name) for f in found)
            raise ValidationError(f"column {header!r} could be any of the fields {names}", field=header)
    return None


def guess_target(header: str, defs: Sequence[FieldOut]) -> str:
    """The target a column most likely means: ``email``/``phone``/``status``, ``field:<id>`` or ignore."""
    plain = normalize(header)
    for key in BUILTINS:
        if plain in (key, f"{key}address", f"{key}number"):
            return key
    try:
        fld = match_field(header, defs)
    except ValidationError:
        return IGNORE
    return f"field:{fld.id}" if fld is not None else IGNORE


def guess(headers: Sequence[str], defs: Sequence[FieldOut]) -> list[str]:
    """One target per column; a target two columns would take goes to the first one only."""
    taken: set[str] = set()
    out = []
    for header in headers:
        target = guess_target(header, defs)
        if target in taken:
            target = IGNORE
        taken.add(target)
        out.append(target)
    return out


def rename_headers(names: Iterable[str], defs: Sequence[FieldOut]) -> dict[str, str]:
    """For the CLI: each custom-field column the contact service would not find by id or key, renamed
    to the id of the field its name matches (unknown columns keep their name, and fail there). A
    header that is a key keeps meaning that key's field, as it did before names were accepted."""
    by_key = {f.shortcode_key.upper() for f in defs} | {str(f.id) for f in defs}
    renamed = {}
    for name in names:
        if name.upper() in by_key:
            continue
        fld = match_field(name, defs)
        if fld is not None:
            renamed[name] = str(fld.id)
    return renamed


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with one cell (or a whole row when ``column`` is empty) of the file."""

    row: int
    """The row number a spreadsheet shows (the header is row 1)."""
    column: str
    message: str


@dataclass
class Table:
    """A parsed CSV: its header and its data rows with their row numbers."""

    headers: list[str]
    rows: list[tuple[int, list[str]]] = field(default_factory=list)


def read_csv(data: bytes) -> Table:
    """The header and rows of a CSV file; ValidationError for a file that is not one."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"the file is not UTF-8 text (byte {exc.start}): save it as “CSV UTF-8”", field="file"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise ValidationError("the file is empty: its first row must name the columns", field="file")
        table = Table([h.strip() for h in header])
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(table.rows) >= MAX_ROWS:
                raise ValidationError(f"at most {MAX_ROWS} rows per import: split the file", field="file")
            table.rows.append((reader.line_num, cells))
    except csv.Error as exc:
        message = f"row {reader.line_num}: this is not a CSV file ({exc})"
        raise ValidationError(message, field="file") from None
    return table


@dataclass(frozen=True, slots=True)
class Preview:
    """One row as it will be stored: each mapped target's value, or what is wrong with it."""

    row: int
    values: dict[str, str]
    wrong: dict[str, str]


@dataclass
class Checked:
    """Every valid row as the contact service's input, the problems of the others, and the first rows
    as they will be stored (the preview)."""

    rows: list[ContactRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    shown: list[Preview] = field(default_factory=list)


def mapping_problems(headers: Sequence[str], targets: Sequence[str], defs: Sequence[FieldOut]) -> list[str]:
    """What is wrong with the mapping itself (no email column, a target taken twice, an unknown one)."""
    known = {*BUILTINS, *(f"field:{f.id}" for f in defs), IGNORE}
    out = []
    seen: dict[str, str] = {}
    for header, target in zip(headers, targets, strict=True):
        if target not in known:
            out.append(f"column {header!r}: choose a field of this list or “ignore”")
        elif target != IGNORE and target in seen:
            out.append(f"columns {seen[target]!r} and {header!r} both go to {label(target, defs)}")
        seen.setdefault(target, header)
    if "email" not in targets:
        out.append("one column must be the contacts' Email")
    return out


def label(target: str, defs: Sequence[FieldOut]) -> str:
    """What a person calls ``target``: Email, Phone, Status or the field's name."""
    if target in BUILTINS:
        return BUILTINS[target]
    return next((f.name for f in defs if f"field:{f.id}" == target), target)


def check(table: Table, targets: Sequence[str], defs: Sequence[FieldOut], *, shown: int) -> Checked:
    """Each row under the mapping ``targets`` (one per column, known targets only), checked as the
    contact service checks it; the first ``shown`` rows kept as they will be stored."""
    by_target = {f"field:{f.id}": f for f in defs}
    out = Checked()
    width = len(table.headers)
    for number, cells in table.rows:
        if len(cells) != width:
            out.problems.append(Problem(number, "", f"{len(cells)} cells for {width} columns"))
            if len(out.shown) < shown:
                out.shown.append(Preview(number, {}, {"": f"{len(cells)} cells for {width} columns"}))
            continue
        row: dict[str, str | None] = {}
        values: dict[str, str | int | float | None] = {}
        stored: dict[str, str] = {}
        wrong: dict[str, str] = {}
        for header, target, raw in zip(table.headers, targets, cells, strict=True):
            if target == IGNORE:
                continue
            cell = raw.strip()
            try:
                if target in BUILTINS:
                    _builtin_ok(target, cell)
                    row[target] = cell or None
                    stored[target] = cell
                elif cell:
                    fld = by_target[target]
                    stored[target], _ = coerce_value(fld, cell, path=header)
                    values[str(fld.id)] = cell
            except ValidationError as exc:
                message = str(exc)
                if target in by_target:
                    message = message.removeprefix(f"{by_target[target].name}: ")
                wrong[target] = message
                out.problems.append(Problem(number, header, message))
        if len(out.shown) < shown:
            out.shown.append(Preview(number, stored, wrong))
        if not wrong:
            email = row.pop("email", None) or ""
            out.rows.append(ContactRow.model_validate({**row, "email": email, "fields": values}))
    return out


def _builtin_ok(target: str, cell: str) -> None:
    if target == "email":
        if not cell:
            raise ValidationError("empty: every contact needs an email address", field="email")
        if len(cell) > EMAIL_MAX or not EMAIL_RE.match(cell):
            raise ValidationError(f"{cell!r} is not an email address", field="email")
    elif target == "phone" and cell and (len(cell) > PHONE_MAX or not PHONE_RE.match(cell)):
        raise ValidationError(f"{cell!r} is not a phone number", field="phone")
    elif target == "status" and len(cell) > STATUS_MAX:
        raise ValidationError(f"a status has at most {STATUS_MAX} characters", field="status")
