"""Secrets at rest: customers' credentials are stored encrypted (AES-GCM) under a key from settings.

What is sealed: action signing secrets (current and previous) and extra header values, in the
action's settings and in every frozen request of the outbox; on the listener, the signing secrets
added in its admin UI (key file default: beside the listener's database). A sealed value reads
``sealed:v1:<key id>:<base64url(nonce + ciphertext)>``; the key id (a hash prefix of the key) says
which key of the :class:`Keyring` opens it, so a rotation can be read through while it re-encrypts.
Values written before sealing existed read as themselves, until :func:`reseal` (run by ``serve`` at
start and by ``contactsync secrets rotate-key``) seals them.

The key: ``CONTACTSYNC_SECRETS_KEY`` (base64url of 32 bytes; older keys may follow, comma-separated,
for reading), else the file ``CONTACTSYNC_SECRETS_KEY_FILE``, else — the embedded SQLite default —
a key file beside the database, generated with mode 0600 on first use (and logged). Any other
database needs one of the two settings: every process sharing it must use the same key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contactsync.errors import ConfigError, SealedError
from contactsync.settings import Settings

log = logging.getLogger("contactsync.sealing")

PREFIX = "sealed:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
MASK = "••••••••"


def generate_key() -> str:
    """A new random key, as the settings and key files hold it (base64url, no padding)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=").decode("ascii")


def _decode_key(text: str, *, source: str) -> bytes:
    text = text.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{source}: a secrets key is the base64url of {KEY_BYTES} bytes") from exc
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{source}: a secrets key is {KEY_BYTES} bytes, this one is {len(raw)}")
    return raw


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"contactsync-sealing\0" + key).hexdigest()[:12]


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def mask(value: str) -> str:
    """A hint that tells values apart without disclosing them (the last 4 characters of long ones)."""
    if value.startswith("whsec_"):
        return "whsec_" + MASK + value[-4:]
    return MASK + value[-4:] if len(value) >= 16 else MASK


class Keyring:
    """Seals with the primary key; opens with any key it holds."""

    __slots__ = ("_aead", "primary_id")

    def __init__(self, primary: bytes, *older: bytes) -> None:
        self._aead = {_key_id(k): AESGCM(k) for k in (primary, *older)}
        self.primary_id = _key_id(primary)

    @classmethod
    def of(cls, keys: Sequence[str], *, source: str = "secrets key") -> Keyring:
        """From the text form of the keys, primary first."""
        if not keys:
            raise ConfigError(f"{source}: no key")
        raw = [_decode_key(k, source=source) for k in keys]
        return cls(raw[0], *raw[1:])

    @classmethod
    def ephemeral(cls) -> Keyring:
        """A random key held in memory only (tests and throw-away runtimes)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    def seal(self, plaintext: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead[self.primary_id].encrypt(nonce, plaintext.encode("utf-8"), PREFIX.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{PREFIX}{self.primary_id}:{body}"

    def open(self, value: str) -> str:
        """The plaintext of a sealed value (a value never sealed reads as itself)."""
        if not is_sealed(value):
            return value
        key_id, _, body = value[len(PREFIX) :].partition(":")
        aead = self._aead.get(key_id)
        if aead is None:
            raise SealedError(f"a secret is sealed under key {key_id}, which is not configured")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], PREFIX.encode()).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise SealedError(f"a secret sealed under key {key_id} does not open (altered?)") from exc

    def current(self, value: str) -> bool:
        """Whether ``value`` is sealed under the primary key (nothing to re-seal)."""
        return value.startswith(f"{PREFIX}{self.primary_id}:")

    def hint(self, value: str) -> str:
        """The masked hint of a stored value (``MASK`` alone if it cannot be opened)."""
        try:
            return mask(self.open(value))
        except SealedError:
            return MASK


# --- where the key comes from -------------------------------------------------------------------


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite database; ``None`` for other databases and in-memory SQLite."""
    scheme, _, rest = database_url.partition("://")
    if not scheme.startswith("sqlite"):
        return None
    path = rest[1:] if rest.startswith("/") else rest
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def default_key_file(database_url: str) -> Path | None:
    """``<database>.key`` beside a SQLite file; ``None`` for other databases and in-memory SQLite."""
    path = sqlite_file(database_url)
    return None if path is None else path.with_name(path.name + ".key")


def key_file(settings: Settings, *, database_url: str | None = None) -> Path | None:
    """The key file in use: the configured one, else the one beside the SQLite database (the
    platform's, or ``database_url``: the listener's)."""
    if settings.secrets_key_file:
        return Path(settings.secrets_key_file)
    return default_key_file(settings.database_url if database_url is None else database_url)


def read_key_file(path: Path) -> list[str]:
    """The keys of a key file: one per line, primary first (a pending rotation's file is read too)."""
    keys = [line.strip() for line in path.read_text("ascii").splitlines() if line.strip()]
    pending = rotation_file(path)
    if pending.exists():  # a rotation that stopped after committing: its new key may be in use
        keys += [line.strip() for line in pending.read_text("ascii").splitlines() if line.strip()]
    return keys


def rotation_file(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def write_key_file(path: Path, keys: Sequence[str]) -> None:
    """Write ``keys`` to ``path`` with mode 0600 (created that way: never readable by others), whole or
    not at all: a crash mid-write leaves the previous file, never a truncated key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write("".join(f"{k}\n" for k in keys))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def keyring_from_settings(
    settings: Settings, *, create: bool = True, database_url: str | None = None
) -> Keyring:
    """The keyring ``settings`` name (see the module docstring for the order); the listener passes
    its own ``database_url``, beside which its default key file lives."""
    if settings.secrets_key:
        return Keyring.of(settings.secrets_key.split(","), source="CONTACTSYNC_SECRETS_KEY")
    path = key_file(settings, database_url=database_url)
    if path is None:
        raise ConfigError(
            "secrets at rest need a key: set CONTACTSYNC_SECRETS_KEY (contactsync secrets generate-key "
            "prints one) or CONTACTSYNC_SECRETS_KEY_FILE; every process sharing the database needs the same"
        )
    if not path.exists():
        if not create or settings.secrets_key_file:
            raise ConfigError(f"secrets key file {path} does not exist")
        write_key_file(path, [generate_key()])
        log.warning("generated the secrets key file %s (mode 0600): back it up with the database", path)
    return Keyring.of(read_key_file(path), source=str(path))
