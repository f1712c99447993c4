"""The secrets a listener accepts: the configured ones, and those added in its admin UI.

Secrets from the settings (``CONTACTSYNC_LISTENER_SECRET``) are read-only; the admin UI adds,
rotates and removes its own, sealed at rest (db/sealing.py) in ``listener_secrets``. A rotation
keeps the previous secret accepted for a grace period (the sender signs with both meanwhile, as
the platform's own rotation does), so nothing in flight is refused.

The request path never reads the table: :class:`SecretBook` holds the keys in memory and swaps the
whole list when the table changes. The admin UI of the same process reloads it at once; every
process also checks a cheap fingerprint of the table (ids and update times, a few rows) at most once
a second, so another process's change is picked up within a second, and a grace period's end too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from contactsync.db import sealing
from contactsync.db.listener import secrets as table
from contactsync.errors import (
    ConfigError,
    NotFoundError,
    SealedError,
    SecretError,
    SignatureError,
    ValidationError,
)
from contactsync.listener.library import secret_keys
from contactsync.wire import signing

log = logging.getLogger("contactsync.listener.secrets")

GRACE = timedelta(hours=24)
"""How long a rotated-out secret is still accepted (the platform signs with both for as long)."""
REFRESH_S = 1.0
MAX_LABEL = 100
CONFIGURED = "from configuration"


@dataclass(frozen=True, slots=True)
class Listed:
    """A secret as the admin page shows it: a masked hint, never the value."""

    id: int | None
    label: str
    hint: str
    previous_until_ms: int | None
    updated_at_ms: int | None
    source: str  # "ui" or CONFIGURED


def _label(text: str) -> str:
    label = " ".join(text.split())
    if not label or len(label) > MAX_LABEL:
        raise ValidationError(f"a label has 1 to {MAX_LABEL} characters", field="label")
    return label


def _checked(secret: str) -> str:
    secret = secret.strip()
    try:
        signing.parse_secret(secret)
    except SecretError as exc:
        raise ValidationError(f"secret: {exc}", field="secret") from exc
    return secret


def add(conn: sa.Connection, keyring: sealing.Keyring, *, label: str, secret: str, now_ms: int) -> int:
    """Store a new accepted secret under ``label`` (unique); returns its id."""
    label, secret = _label(label), _checked(secret)
    if conn.execute(sa.select(table.c.id).where(table.c.label == label)).first() is not None:
        raise ValidationError(f"a secret labelled {label!r} exists already", field="label")
    return int(
        conn.execute(
            table.insert()
            .values(label=label, secret=keyring.seal(secret), created_at_ms=now_ms, updated_at_ms=now_ms)
            .returning(table.c.id)
        ).scalar_one()
    )


def rotate(conn: sa.Connection, keyring: sealing.Keyring, secret_id: int, *, secret: str, now_ms: int) -> str:
    """Accept ``secret`` under the same label from now on, and the old one for :data:`GRACE` more."""
    secret = _checked(secret)
    row = conn.execute(sa.select(table).where(table.c.id == secret_id)).first()
    if row is None:
        raise NotFoundError(f"secret {secret_id} does not exist", field="secret_id")
    if keyring.open(row.secret) == secret:
        raise ValidationError("that is the secret already in use; paste the new one", field="secret")
    conn.execute(
        table.update()
        .where(table.c.id == secret_id)
        .values(
            secret=keyring.seal(secret),
            previous_secret=row.secret,
            previous_until_ms=now_ms + int(GRACE.total_seconds() * 1000),
            updated_at_ms=now_ms,
        )
    )
    return str(row.label)


def pair(conn: sa.Connection, keyring: sealing.Keyring, *, label: str, secret: str, now_ms: int) -> None:
    """Accept ``secret`` under ``label``: added, or rotated in if the label exists (what a person does
    on the Secrets page; the demo does it for each action of its account)."""
    label = _label(label)
    found = conn.execute(sa.select(table.c.id, table.c.secret).where(table.c.label == label)).first()
    if found is None:
        add(conn, keyring, label=label, secret=secret, now_ms=now_ms)
    elif keyring.open(found.secret) != secret.strip():
        rotate(conn, keyring, int(found.id), secret=secret, now_ms=now_ms)


def remove(conn: sa.Connection, secret_id: int) -> str:
    """Stop accepting the secret (and its previous one) at once; returns its label."""
    label = conn.execute(sa.select(table.c.label).where(table.c.id == secret_id)).scalar()
    if label is None:
        raise NotFoundError(f"secret {secret_id} does not exist", field="secret_id")
    conn.execute(table.delete().where(table.c.id == secret_id))
    return str(label)


def listed(conn: sa.Connection, keyring: Callable[[], sealing.Keyring], configured: str) -> list[Listed]:
    """The configured secrets (read-only) and the UI's, by label; at most a few dozen rows."""
    shown = [
        Listed(None, f"configured #{n}", sealing.mask(s), None, None, CONFIGURED)
        for n, s in enumerate(configured.replace(",", " ").split(), start=1)
    ]
    rows = conn.execute(sa.select(table).order_by(table.c.label)).all()
    ring = keyring() if rows else None
    for r in rows:
        hint = ring.hint(r.secret) if ring is not None else sealing.MASK
        shown.append(Listed(r.id, r.label, hint, r.previous_until_ms, r.updated_at_ms, "ui"))
    return shown


Fingerprint = tuple[tuple[int, int], ...]


def fingerprint(conn: sa.Connection) -> Fingerprint:
    """What changes whenever a secret is added, rotated or removed (the table holds a few rows)."""
    return tuple((int(i), int(u)) for i, u in conn.execute(sa.select(table.c.id, table.c.updated_at_ms)))


class SecretBook:
    """The keys the request path verifies with, swapped as a whole (the hot path reads ``keys``)."""

    def __init__(self, configured: str, keyring: Callable[[], sealing.Keyring]) -> None:
        self._configured = [(CONFIGURED, k) for k in secret_keys(configured)]
        self._keyring = keyring
        self._ring: sealing.Keyring | None = None
        self.keys: list[bytes] = [k for _, k in self._configured]
        """What the request path verifies with: replaced whole, never changed in place."""
        self.labelled: tuple[tuple[str, bytes], ...] = tuple(self._configured)
        """The same keys with their labels (the refusal path names the one that signed)."""
        self._seen: Fingerprint | None = None
        self._expires_ms: int | None = None

    def keyring(self) -> sealing.Keyring:
        if self._ring is None:
            self._ring = self._keyring()
        return self._ring

    def load(self, engine: sa.Engine, *, now_ms: int) -> None:
        """Read the table now and swap the keys in (the admin UI calls this after each change)."""
        with engine.connect() as conn:
            seen = fingerprint(conn)
            rows = conn.execute(sa.select(table).order_by(table.c.id)).all() if seen else []
        labelled = list(self._configured)
        expires: list[int] = []
        for r in rows:
            labelled.append((r.label, self._key(r.secret)))
            if r.previous_secret and r.previous_until_ms is not None and r.previous_until_ms > now_ms:
                labelled.append((f"{r.label} (previous)", self._key(r.previous_secret)))
                expires.append(int(r.previous_until_ms))
        self.labelled = tuple(labelled)  # each attribute is swapped whole: readers see one or the other
        self.keys = [k for _, k in labelled]
        self._seen = seen
        self._expires_ms = min(expires) if expires else None

    def _key(self, sealed: str) -> bytes:
        return signing.parse_secret(self.keyring().open(sealed))

    def refresh(self, engine: sa.Engine, *, now_ms: int) -> bool:
        """Reload if the table changed or a grace period ended since the last load; whether it did."""
        with engine.connect() as conn:
            seen = fingerprint(conn)
        if seen == self._seen and (self._expires_ms is None or now_ms < self._expires_ms):
            return False
        self.load(engine, now_ms=now_ms)
        return True

    def label_of(self, headers: Mapping[str, str], content: bytes, *, now: float, tolerance_s: int) -> str:
        """Which secret signed a request refused for another reason (the refusal path only)."""
        for label, key in self.labelled:
            try:
                signing.verify(headers, content, [key], now=now, tolerance_s=tolerance_s)
            except SignatureError:
                continue
            return label
        return ""

    async def watch(self, engine: sa.Engine, stop: asyncio.Event, clock_ms: Callable[[], int]) -> None:
        """Refresh every :data:`REFRESH_S` until ``stop`` is set (a table read in a thread, never on
        the request path)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_S)
            if stop.is_set():
                return
            try:
                await asyncio.to_thread(self.refresh, engine, now_ms=clock_ms())
            except (sa.exc.SQLAlchemyError, ConfigError, SealedError) as exc:
                log.warning("listener secrets not refreshed: %s", exc)
