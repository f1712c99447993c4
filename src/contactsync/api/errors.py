"""Exception handlers: every refusal is a JSON body that names what is wrong, never a 5xx for bad input.

Body shape (all 4xx)::

    {"error": "validation_error", "message": "...", "field": "fields.age",
     "errors": [{"field": "...", "message": "...", "type": "..."}]}

``field`` is a dotted path into the request (``body.`` / ``query.`` / ``path.`` prefixes are dropped
for body fields, kept for the others), so a client can put the message next to the right input.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import pydantic
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from contactsync.db.errors import translate
from contactsync.errors import (
    ConflictError,
    ConstraintError,
    NotFoundError,
    TemplateError,
    UnstorableValueError,
    ValidationError,
)

log = logging.getLogger("contactsync.api")


class ErrorItem(BaseModel):
    field: str
    message: str
    type: str


class ErrorBody(BaseModel):
    """What every 4xx answer of the API carries."""

    error: str
    message: str
    field: str = ""
    errors: list[ErrorItem] = []


class ApiError(Exception):
    """A refusal decided in the API layer itself (auth, conflicts, not implemented)."""

    def __init__(self, status: int, error: str, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field


def field_path(loc: Sequence[int | str]) -> str:
    """``("body", "fields", "age")`` → ``fields.age``; ``("query", "limit")`` → ``query.limit``."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def respond(
    status: int, error: str, message: str, *, field: str = "", items: list[ErrorItem] | None = None
) -> JSONResponse:
    body = ErrorBody(error=error, message=message, field=field, errors=items or [])
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _request_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items = []
    for problem in exc.errors():
        loc = _clean(problem.get("loc", ()))
        items.append(
            ErrorItem(
                field=field_path(loc), message=str(problem.get("msg", "")), type=str(problem.get("type"))
            )
        )
    first = items[0] if items else ErrorItem(field="", message="invalid request", type="invalid")
    status = 400 if first.type == "json_invalid" else 422
    message = f"{first.field}: {first.message}" if first.field else first.message
    return respond(status, "invalid_request", message, field=first.field, items=items)


_MEMBER_TYPE = re.compile(r"^(constrained-)?(str|int|float|bool|bytes|none|decimal)$|^[a-z-]+\[.*\]$")
"""Union members pydantic names in an error location (``fields.AGE.int``): not part of the input path."""


def _clean(loc: Sequence[int | str]) -> list[int | str]:
    """The error location as the client wrote the input: union tags and member names removed.

    A tagged union member shows up as its tag right after the list index of the item
    (``events[1].campaign.opened.campaign_id``); validators wrap as ``function-after[…]``.
    """
    out: list[int | str] = []
    for part in loc:
        if isinstance(part, str) and (
            part.startswith("function-")
            or _MEMBER_TYPE.match(part)
            or (out and isinstance(out[-1], int) and not part.isidentifier())
            or (out and isinstance(out[-1], int) and part in _CONDITION_TYPES)
        ):
            continue
        out.append(part)
    return out


_CONDITION_TYPES = frozenset({"field", "activity", "group"})
"""Tags of the condition-tree union (identifiers, unlike the dotted event kinds)."""


def _model_validation(_request: Request, exc: Exception) -> JSONResponse:
    # a service's input model built from request data refused it (e.g. a cross-field rule)
    assert isinstance(exc, pydantic.ValidationError)
    items = [
        ErrorItem(field=field_path(_clean(e["loc"])), message=e["msg"], type=e["type"]) for e in exc.errors()
    ]
    first = items[0] if items else ErrorItem(field="", message=str(exc), type="invalid")
    message = f"{first.field}: {first.message}" if first.field else first.message
    return respond(422, "invalid_request", message, field=first.field, items=items)


def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    status = 404 if isinstance(exc, NotFoundError) else 422
    error = "not_found" if status == 404 else "validation_error"
    item = ErrorItem(field=exc.field, message=str(exc), type=error)
    return respond(status, error, str(exc), field=exc.field, items=[item])


def _conflict(_request: Request, exc: Exception) -> JSONResponse:
    # valid, but the state forbids it now (a run is running): the message names what is in the way
    assert isinstance(exc, ConflictError)
    item = ErrorItem(field=exc.field, message=str(exc), type="conflict")
    return respond(409, "conflict", str(exc), field=exc.field, items=[item])


def _template(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TemplateError)
    message = f"line {exc.line}, column {exc.column}: {exc.message}"
    return respond(422, "template_error", message, field="url")


def _api(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return respond(exc.status, exc.error, exc.message, field=exc.field)


def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    response = respond(exc.status_code, error, str(exc.detail))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


def _integrity(_request: Request, exc: Exception) -> JSONResponse:
    # a concurrent write won a unique key (same email upserted twice at once, …): the client may retry
    assert isinstance(exc, ConstraintError)
    log.info("conflict: %s", exc)
    return respond(409, "conflict", "a concurrent change conflicted with this one; retry the request")


def _data(_request: Request, exc: Exception) -> JSONResponse:
    # values the database cannot hold (an integer beyond 64 bits, a NUL in text): bad input, not a bug
    assert isinstance(exc, UnstorableValueError | OverflowError)
    log.info("value refused by the database: %s", exc)
    return respond(
        422, "invalid_value", "a value is out of range or contains characters that cannot be stored"
    )


def _untranslated(request: Request, exc: Exception) -> JSONResponse:
    # the API's transactions translate (ApiContext.tx); the admin UI's pages mounted onto this app
    # do not, and their refusals answer the same way
    assert isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError)
    translated = translate(exc)
    return (
        _integrity(request, translated)
        if isinstance(translated, ConstraintError)
        else _data(request, translated)
    )


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(pydantic.ValidationError, _model_validation)
    app.add_exception_handler(ValidationError, _validation)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(TemplateError, _template)
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ConstraintError, _integrity)
    app.add_exception_handler(UnstorableValueError, _data)
    app.add_exception_handler(OverflowError, _data)
    app.add_exception_handler(sa.exc.IntegrityError, _untranslated)
    app.add_exception_handler(sa.exc.DataError, _untranslated)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed body"},
    401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key, or a suspended account's"},
    403: {
        "model": ErrorBody,
        "description": "The key's role does not allow this (the message names the role needed)",
    },
    404: {"model": ErrorBody, "description": "An id that does not exist (or belongs to another account)"},
    409: {"model": ErrorBody, "description": "A concurrent change conflicted, or a state that forbids it"},
    413: {"model": ErrorBody, "description": "The request body is too large"},
    422: {"model": ErrorBody, "description": "Invalid input; `field` names the offending field"},
}
"""Documented on every route so clients (and schemathesis) know the error shape."""
