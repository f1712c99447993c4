"""Form errors of the admin UI shown next to the form that caused them, with what was typed kept.

A refused form is answered by the same page again (status 422), the message beside the form (and
the input it names), every input holding what the person typed: nothing to type twice. Service
errors name their field (``ValidationError.field``, ``ConflictError.field``); pydantic errors their
location; both become a :class:`Problem`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from contactsync.errors import ConflictError, ValidationError


@dataclass(frozen=True, slots=True)
class Problem:
    """Why the form ``form`` of a page was refused, and what was typed in it."""

    form: str
    message: str
    field: str = ""
    typed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def at(self, form: str) -> bool:
        """True when this problem belongs to the page's form ``form`` (templates ask)."""
        return self.form == form

    def value(self, name: str, default: Any = "") -> Any:
        """What was typed into ``name``, or ``default`` (the stored value)."""
        return self.typed.get(name, default)


def explain_error(exc: Exception) -> tuple[str, str]:
    """``(field, message)`` of a service or pydantic error, for one line beside the form."""
    if isinstance(exc, PydanticValidationError):
        errors = exc.errors()
        if errors:
            first = errors[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
            return where, f"{where}: {message}" if where else message
        return "", str(exc)
    if isinstance(exc, ValidationError | ConflictError):
        return exc.field, str(exc)
    return "", str(exc)


def plain_error(exc: Exception, input_of: Callable[[list[str]], str]) -> tuple[str, str]:
    """``(input, message)`` for one line beside the input that caused ``exc``: ``input_of`` maps the
    error's location (``["trigger", "ref_id"]``) to the form's input name; the message carries no
    "Value error, " prefix and no location the page already shows by its place."""
    if isinstance(exc, PydanticValidationError):
        errors = exc.errors()
        if not errors:
            return "", str(exc)
        first = errors[0]
        loc = [str(p) for p in first.get("loc", ())]
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return input_of(loc), message
    if isinstance(exc, ValidationError | ConflictError) or getattr(exc, "field", None):
        loc = [p for p in re.split(r"[.\[\]]+", str(getattr(exc, "field", ""))) if p]
        return input_of(loc), str(exc)
    return "", str(exc)


def typed_of(form: Any) -> dict[str, Any]:
    """Every input of a submitted form: one value per name, or the list of a repeated name."""
    out: dict[str, Any] = {}
    for name in form:
        values = [v for v in form.getlist(name) if isinstance(v, str)]
        out[name] = values if len(values) > 1 else (values[0] if values else "")
    return out


def small_int(raw: str) -> int | None:
    """A positive id typed into a form, or None (not a number, or too large to be one)."""
    return int(raw) if raw.isdigit() and len(raw) < 19 else None
