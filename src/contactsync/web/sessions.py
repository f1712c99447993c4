"""Server-side sessions of the admin UIs: a signed-in cookie is a random token naming a database row.

Logout deletes the row, so a copied cookie stops working at once. On the listener, so does changing
the admin password (each row remembers a tag of the password it was made with). On the platform,
people sign in as users and whatever ends their access (a new password, removal, suspension,
disabling) deletes their rows (:mod:`contactsync.tenancy.people`); their rows carry the constant
:data:`USERS_TAG` and the account the user works in. A session also ends after
``idle_s`` without use and ``absolute_s`` after sign-in, whichever comes first. Before sign-in the
login form's CSRF token still rides in the stateless signed cookie (:class:`SessionCodec`): nothing
is stored for a visitor who has not signed in.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from contactsync.web.security import Session

TOUCH_EVERY_S = 60.0
"""``last_seen_at`` is rewritten at most this often per session (not on every page view)."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


USERS_TAG = "users"
"""The platform's tag: its sessions are ended by name, not by a change of one shared password."""


def password_tag(configured: str) -> str:
    """A tag of the configured admin password (or hash): it changes when the password does."""
    return hashlib.sha256(b"contactsync-admin-password\0" + configured.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStore:
    """Creates, reads and ends the sessions of one side's ``admin_sessions`` table."""

    engine: sa.Engine
    table: sa.Table
    clock_s: Callable[[], float]
    idle_s: float
    absolute_s: float
    password_tag: str

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock_s(), UTC).replace(tzinfo=None)

    def create(self, principal: str, *, account_id: int | None = None) -> tuple[str, Session]:
        """A new signed-in session (working in ``account_id``): the cookie token (shown once) and the
        session."""
        token = secrets.token_urlsafe(32)
        now = self._now()
        expires = now + timedelta(seconds=self.absolute_s)
        session = Session(
            csrf=secrets.token_urlsafe(24),
            user=principal,
            expires_s=self.clock_s() + self.absolute_s,
            id=_hash(token),
            account_id=account_id,
        )
        with self.engine.begin() as conn:
            conn.execute(self.table.delete().where(self.table.c.expires_at < now))  # purge the stale
            conn.execute(
                self.table.insert().values(
                    id=session.id,
                    principal=principal,
                    csrf=session.csrf,
                    password_tag=self.password_tag,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires,
                    account_id=account_id,
                )
            )
        return token, session

    def load(self, token: str) -> Session | None:
        """The live session of ``token``, or ``None`` (unknown, ended, idle too long, expired, or made
        with another password)."""
        key = _hash(token)
        now = self._now()
        c = self.table.c
        with self.engine.connect() as conn:  # a plain read: most page views write nothing
            row = conn.execute(sa.select(self.table).where(c.id == key)).first()
        if row is None:
            return None
        idle = now - row.last_seen_at > timedelta(seconds=self.idle_s)
        if idle or row.expires_at <= now or row.password_tag != self.password_tag:
            with self.engine.begin() as conn:
                conn.execute(self.table.delete().where(c.id == key))
            return None
        if (now - row.last_seen_at).total_seconds() >= TOUCH_EVERY_S:
            with self.engine.begin() as conn:
                conn.execute(self.table.update().where(c.id == key).values(last_seen_at=now))
        expires_s = row.expires_at.replace(tzinfo=UTC).timestamp()
        account_id = None if row.account_id is None else int(row.account_id)
        return Session(csrf=row.csrf, user=row.principal, expires_s=expires_s, id=key, account_id=account_id)

    def switch(self, session: Session, account_id: int) -> None:
        """Work in ``account_id`` from the next request on (the caller checked the role there)."""
        with self.engine.begin() as conn:
            conn.execute(
                self.table.update().where(self.table.c.id == session.id).values(account_id=account_id)
            )

    def end(self, session: Session) -> None:
        """End ``session`` now (logout)."""
        with self.engine.begin() as conn:
            conn.execute(self.table.delete().where(self.table.c.id == session.id))

    def end_all(self, principal: str) -> int:
        """End every session of ``principal`` (password change, removal); how many ended."""
        with self.engine.begin() as conn:
            return int(conn.execute(self.table.delete().where(self.table.c.principal == principal)).rowcount)
