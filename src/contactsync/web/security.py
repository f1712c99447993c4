"""Admin UI security: argon2 password check, signed visitor cookie, CSRF tokens, login rate limit.

Signed-in sessions are server-side (:mod:`contactsync.web.sessions`). Before sign-in, the visitor's
session lives in an HMAC-signed cookie (no server state). Every session — even before login —
carries a CSRF token; every form and JSON call must echo it, which makes a cross-site POST
useless even if ``SameSite`` were ignored. Time comes in as a parameter so tests stay exact.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from contactsync.errors import ConfigError

if TYPE_CHECKING:
    from contactsync.web.identity import Identity

SESSION_MAX_AGE_S = 12 * 3600
LOGIN_ATTEMPTS_PER_WINDOW = 5
LOGIN_WINDOW_S = 60.0
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class PasswordCheck:
    """Verifies the admin password against an argon2 hash (a plain setting is hashed at start-up)."""

    def __init__(self, configured: str) -> None:
        if not configured:
            raise ConfigError(
                "admin_password is empty: set CONTACTSYNC_ADMIN_PASSWORD to enable the admin UI"
            )
        self._hasher = PasswordHasher()
        self._hash = configured if configured.startswith("$argon2") else self._hasher.hash(configured)

    def verify(self, password: str) -> bool:
        try:
            return bool(self._hasher.verify(self._hash, password))
        except (VerificationError, InvalidHashError):
            return False


def hash_password(password: str) -> str:
    """The argon2id hash to put in ``CONTACTSYNC_ADMIN_PASSWORD`` instead of the password itself."""
    return PasswordHasher().hash(password)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    """What the cookie carries: whether the admin logged in, the CSRF token, and the expiry."""

    csrf: str
    user: str = ""
    expires_s: float = 0.0
    id: str = ""
    """The server-side session's key (signed in); empty for the signed cookie of a visitor."""
    account_id: int | None = None
    """The account a platform user works in (the account switcher changes it)."""
    identity: Identity | None = None
    """Who is signed in to the platform, read afresh on every request; None on the listener."""

    @property
    def authenticated(self) -> bool:
        return bool(self.user)

    @property
    def who(self) -> Identity:
        """The platform user of this session (only platform pages ask)."""
        if self.identity is None:
            raise RuntimeError("no platform user in this session")
        return self.identity


class SessionCodec:
    """Signs and reads the session cookie (HMAC-SHA256 over a JSON body, keyed per side)."""

    def __init__(
        self, secret: str, *, purpose: str, max_age_s: float = SESSION_MAX_AGE_S, clock_s: Callable[[], float]
    ) -> None:
        raw = secret.encode("utf-8") if secret else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"contactsync-session:" + purpose.encode() + b":" + raw).digest()
        self.max_age_s = max_age_s
        self._clock_s = clock_s

    def new(self, *, user: str = "") -> Session:
        """A fresh session (a new CSRF token every time, so logging in rotates it)."""
        return Session(csrf=secrets.token_urlsafe(24), user=user, expires_s=self._clock_s() + self.max_age_s)

    def dump(self, session: Session) -> str:
        body = _b64(json.dumps({"c": session.csrf, "u": session.user, "e": session.expires_s}).encode())
        sig = _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())
        return f"{body}.{sig}"

    def load(self, cookie: str | None) -> Session | None:
        """The session in ``cookie``, or None when it is missing, forged, malformed or expired."""
        if not cookie or "." not in cookie:
            return None
        body, _, sig = cookie.partition(".")
        expected = _b64(hmac.new(self._key, body.encode("ascii", "replace"), hashlib.sha256).digest())
        if not hmac.compare_digest(sig, expected):
            return None
        try:
            data = json.loads(_unb64(body))
            session = Session(csrf=str(data["c"]), user=str(data["u"]), expires_s=float(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires_s < self._clock_s() or not session.csrf:
            return None
        return session


def csrf_ok(session: Session | None, offered: str | None) -> bool:
    """True when ``offered`` is this session's CSRF token (constant-time)."""
    if session is None or not offered:
        return False
    return hmac.compare_digest(session.csrf.encode(), offered.encode("utf-8", "replace"))


@dataclass
class LoginLimiter:
    """At most ``attempts`` failed logins per client address per ``window_s`` (then 429 until it slides)."""

    clock_s: Callable[[], float]
    attempts: int = LOGIN_ATTEMPTS_PER_WINDOW
    window_s: float = LOGIN_WINDOW_S
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, client: str) -> deque[float]:
        stamps = self._failures.setdefault(client, deque())
        horizon = self.clock_s() - self.window_s
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        return stamps

    def blocked(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        stamps = self._recent(client)
        if len(stamps) < self.attempts:
            return 0.0
        return max(stamps[0] + self.window_s - self.clock_s(), 1.0)

    def failed(self, client: str) -> None:
        self._recent(client).append(self.clock_s())
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            for key in [k for k, v in self._failures.items() if not v][:5000]:
                del self._failures[key]

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
