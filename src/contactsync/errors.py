"""The one exception tree of contactsync.

Every error the package raises on purpose derives from :class:`ContactSyncError`, so callers
can catch the package as a whole; third-party exceptions are translated at the boundary with
``raise X from exc``.

::

    ContactSyncError
    ├── ConfigError                settings that cannot work
    │   └── SecretError            a webhook secret that is not ``whsec_`` + base64 of 24–64 bytes
    ├── WireError                  the wire contract (wire/)
    │   ├── PHPFormLimitError      a body over the variable or nesting limits (PHP's, on every encoding)
    │   ├── PayloadError           a body that is not a valid SyncPayload (names the key path)
    │   └── SignatureError         a missing, forged or stale webhook signature (``reason`` says which)
    ├── TemplateError              a URL template that does not compile (line, column, suggestions)
    ├── StorageError               the database refused or lost a write
    │   ├── SealedError            a value sealed at rest that no key of the keyring opens
    │   ├── ConstraintError        a write broke a constraint (db/errors.py translates SQLAlchemy's)
    │   │   ├── DuplicateKeyError  a unique key is taken, often by a concurrent write (a retry may pass)
    │   │   ├── DanglingReferenceError  a foreign key names a row that does not exist (any more)
    │   │   └── MissingValueError  a NOT NULL column left empty
    │   └── UnstorableValueError   a value the column cannot hold (out of range, a NUL in text)
    ├── ValidationError            bad input to a service (names the offending field)
    │   └── NotFoundError          an id that does not exist
    ├── ConflictError              a state that forbids the change now (names what is in the way)
    │   └── RunInProgressError     a manual run of the automation is still running
    ├── PermissionDeniedError      the caller's role does not allow the change (names the role needed)
    ├── DeliveryError              the dispatcher could not make an attempt
    │   └── BlockedAddressError    an address the network guard refuses (SSRF)
    └── ListenerError              the listener could not accept a request
        ├── HandlerError           a listener handler failed (carries the HTTP outcome, if any)
        └── RequestError           a request the listener refuses before validation (status, code)
"""

from __future__ import annotations


class ContactSyncError(Exception):
    """Root of every error contactsync raises on purpose."""


class ConfigError(ContactSyncError):
    """Settings that cannot work together."""


class SecretError(ConfigError):
    """A webhook secret that is not ``whsec_`` followed by the base64 of 24–64 bytes."""


class WireError(ContactSyncError):
    """A body, header or id that breaks the wire contract."""


class PHPFormLimitError(WireError):
    """A body PHP would silently truncate (too many variables or nesting too deep).

    ``limit`` is PHP's name of the limit (the same for form, query and JSON bodies); ``path`` names
    the offending key when it is known.
    """

    def __init__(self, message: str, *, limit: str, value: int, maximum: int, path: str = "") -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.maximum = maximum
        self.path = path


class PayloadError(WireError):
    """A decoded body that is not a valid SyncPayload; ``path`` names the bad key."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class SignatureError(WireError):
    """A webhook signature or timestamp that does not verify.

    ``reason`` is one of ``missing_header``, ``bad_timestamp``, ``too_old``, ``too_new``, ``no_match``
    (for metrics and logs; the message is for humans).
    """

    def __init__(self, message: str, *, reason: str = "no_match") -> None:
        super().__init__(message)
        self.reason = reason


class TemplateError(ContactSyncError):
    """A URL template that does not compile; carries its position and nearest valid names."""

    def __init__(
        self,
        message: str,
        *,
        template: str = "",
        line: int = 1,
        column: int = 1,
        text: str = "",
        suggestions: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.template = template
        self.line = line
        self.column = column
        self.text = text
        self.suggestions = suggestions

    def caret(self) -> str:
        """The template line with a caret under the error, for terminals."""
        lines = self.template.splitlines() or [""]
        shown = lines[min(self.line, len(lines)) - 1]
        return f"{shown}\n{' ' * (self.column - 1)}^"


class StorageError(ContactSyncError):
    """The database refused or lost a write."""


class SealedError(StorageError):
    """A value encrypted at rest that no key of the keyring opens (wrong key, or tampered with)."""


class ConstraintError(StorageError):
    """The database refused a write that breaks a constraint; ``detail`` is the driver's message
    (it names the constraint or column)."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class DuplicateKeyError(ConstraintError):
    """A unique key is taken: often by a concurrent write of the same thing, so a retry may pass."""


class DanglingReferenceError(ConstraintError):
    """A foreign key names a row that does not exist (deleted meanwhile, or never)."""


class MissingValueError(ConstraintError):
    """A NOT NULL column was left empty."""


class UnstorableValueError(StorageError):
    """A value the column cannot hold (an integer beyond its range, a NUL in text): bad input, not a bug;
    ``detail`` is the driver's message."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class ValidationError(ContactSyncError):
    """Bad input to a service; ``field`` names what is wrong."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class NotFoundError(ValidationError):
    """An id that does not exist."""


class ConflictError(ContactSyncError):
    """The request is valid but the current state forbids it; ``field`` names what is in the way."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class PermissionDeniedError(ContactSyncError):
    """The caller is known but its role does not allow this; ``needed`` names the role that would."""

    def __init__(self, message: str, *, needed: str = "") -> None:
        super().__init__(message)
        self.needed = needed


class RunInProgressError(ConflictError):
    """Another manual run of the automation is running; ``run_id`` names it."""

    def __init__(self, run_id: int, automation_id: int) -> None:
        super().__init__(
            f"manual run {run_id} of automation {automation_id} is still running;"
            " cancel it or wait for it to finish before starting another",
            field="automation_id",
        )
        self.run_id = run_id
        self.automation_id = automation_id


class DeliveryError(ContactSyncError):
    """The dispatcher could not make an attempt."""


class BlockedAddressError(DeliveryError):
    """An address the network guard refuses (private, loopback, link-local, …)."""


class ListenerError(ContactSyncError):
    """The listener could not accept a request."""


class HandlerError(ListenerError):
    """A listener handler failed; ``status``/``headers`` describe an HTTP answer when there was one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        attempt: object = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.attempt = attempt
        """The outbound attempt that failed, for the handler's attempt log (``handlers.AttemptRecord``)."""


class RequestError(ListenerError):
    """A request refused before validation: ``status`` is its HTTP answer, ``code`` the error name."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
