"""SQLAlchemy's errors as the package's, translated once, as httpx maps its transport's errors.

Services and faces catch :class:`~contactsync.errors.DuplicateKeyError` and its siblings instead of
reading SQLAlchemy's ``IntegrityError`` and guessing which constraint failed. Which constraint it was
comes from the driver's own code (PostgreSQL's SQLSTATE, SQLite's extended result code, MySQL's
error number); a constraint none of them names stays a plain :class:`~contactsync.errors.ConstraintError`.
The translated error's message is SQLAlchemy's, so logs read as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa

from contactsync.errors import (
    ConstraintError,
    DanglingReferenceError,
    DuplicateKeyError,
    MissingValueError,
    StorageError,
    UnstorableValueError,
)

_BY_SQLSTATE: dict[str, type[ConstraintError]] = {
    "23505": DuplicateKeyError,
    "23503": DanglingReferenceError,
    "23502": MissingValueError,
}
_BY_SQLITE_NAME: dict[str, type[ConstraintError]] = {
    "SQLITE_CONSTRAINT_UNIQUE": DuplicateKeyError,
    "SQLITE_CONSTRAINT_PRIMARYKEY": DuplicateKeyError,
    "SQLITE_CONSTRAINT_FOREIGNKEY": DanglingReferenceError,
    "SQLITE_CONSTRAINT_NOTNULL": MissingValueError,
}
_BY_MYSQL_ERRNO: dict[int, type[ConstraintError]] = {
    1062: DuplicateKeyError,
    1216: DanglingReferenceError,
    1452: DanglingReferenceError,
    1048: MissingValueError,
}
_MYSQL_CHECK_FAILED = frozenset({3819, 4025})
"""A failed CHECK: MySQL's and MariaDB's numbers, which PyMySQL raises as an OperationalError, not as an
integrity error (its table of integrity errnos predates them)."""


def _constraint(orig: BaseException | None) -> type[ConstraintError]:
    sqlstate = getattr(orig, "sqlstate", None)  # psycopg
    if isinstance(sqlstate, str) and sqlstate in _BY_SQLSTATE:
        return _BY_SQLSTATE[sqlstate]
    name = getattr(orig, "sqlite_errorname", None)  # sqlite3
    if isinstance(name, str) and name in _BY_SQLITE_NAME:
        return _BY_SQLITE_NAME[name]
    errno = _mysql_errno(orig)
    if errno in _BY_MYSQL_ERRNO:
        return _BY_MYSQL_ERRNO[errno]
    return ConstraintError


def _mysql_errno(orig: BaseException | None) -> int | None:
    """PyMySQL's error number: its errors' args are (errno, message)."""
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def translate(exc: sa.exc.IntegrityError | sa.exc.DataError) -> StorageError:
    """The package's error for ``exc`` (raise it ``from exc``)."""
    detail = str(exc.orig) if exc.orig is not None else str(exc)
    if isinstance(exc, sa.exc.DataError):
        return UnstorableValueError(str(exc), detail=detail)
    return _constraint(exc.orig)(str(exc), detail=detail)


def _failed_check(exc: sa.exc.OperationalError) -> ConstraintError | None:
    """The package's error for ``exc`` if it is MySQL's or MariaDB's report of a failed CHECK, else None."""
    if _mysql_errno(exc.orig) in _MYSQL_CHECK_FAILED:
        return ConstraintError(str(exc), detail=str(exc.orig))
    return None


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Run the block with SQLAlchemy's ``IntegrityError`` and ``DataError`` (and MariaDB's failed CHECK)
    raised as the package's (put it outside a transaction's block to cover what its commit raises too)."""
    try:
        yield
    except (sa.exc.IntegrityError, sa.exc.DataError) as exc:
        raise translate(exc) from exc
    except sa.exc.OperationalError as exc:
        check = _failed_check(exc)
        if check is None:
            raise
        raise check from exc


def driver_errors(engine: sa.Engine) -> tuple[type[Exception], ...]:
    """What the engine's driver raises, for code that talks to it without SQLAlchemy in between."""
    return (engine.dialect.loaded_dbapi.Error,)
