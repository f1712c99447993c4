"""Bearer API keys: created once, shown once, stored as a SHA-256 digest with a public prefix id.

A key is ``csk_<prefix>_<secret>`` with 256 bits of randomness in the secret, so a fast hash is
enough (there is nothing to brute-force, unlike a password); the prefix finds the row without
scanning, and the digest comparison is constant-time. Revoked keys stay listed for audit.

A key carries a role in its account (``viewer``, ``editor`` or ``owner``), or is an operator key:
no account, installation-wide, for accounts and users only. A suspended account's keys are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel, Field

from contactsync.db.platform import accounts, api_keys
from contactsync.errors import NotFoundError, ValidationError
from contactsync.tenancy.audit import Actor
from contactsync.tenancy.roles import OPERATOR, ROLES, Role

KEY_SCHEME = "csk"
PREFIX_BYTES = 6
SECRET_BYTES = 32
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per key: a read must not cost a write each time."""


class KeyOut(BaseModel):
    """A key as listed: never the key itself."""

    id: int
    account_id: int | None = Field(description="none for an operator key")
    role: str = Field(description="viewer, editor or owner in its account; operator for an operator key")
    name: str
    prefix: str = Field(description="public part of the key, shown in listings to tell keys apart")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class CreatedKey(KeyOut):
    key: str = Field(description="the bearer key; shown only in this response, store it now")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyHolder:
    """Whoever presented a valid key: its account (none for an operator key) and role."""

    key_id: int
    account_id: int | None
    role: str
    label: str

    @property
    def actor(self) -> Actor:
        return Actor(kind="key", id=self.key_id, label=self.label)


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """A caller acting in an account with a role (an account key, or a signed-in member)."""

    account_id: int
    role: Role
    actor: Actor


def digest(key: str) -> str:
    """Hex SHA-256 of the whole key, as stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(token_hex: Callable[[int], str] = secrets.token_hex) -> tuple[str, str]:
    """A fresh ``(prefix, key)``; randomness is injectable for tests."""
    prefix = token_hex(PREFIX_BYTES)
    return prefix, f"{KEY_SCHEME}_{prefix}_{token_hex(SECRET_BYTES)}"


def _out(row: sa.Row[tuple[object, ...]]) -> KeyOut:
    return KeyOut.model_validate(row._asdict())  # key_hash is not a field: ignored


def create_key(
    conn: sa.Connection,
    *,
    account_id: int | None,
    name: str,
    now: datetime,
    role: str = Role.EDITOR.value,
    token_hex: Callable[[int], str] = secrets.token_hex,
) -> CreatedKey:
    """Store a new key for ``account_id`` with ``role`` (an operator key: ``account_id=None`` and
    ``role="operator"``); the returned ``key`` is the only copy in clear."""
    if (role == OPERATOR) != (account_id is None):
        raise ValidationError("an operator key has no account, and every other key has one", field="role")
    if role != OPERATOR and role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}, not {role!r}", field="role")
    found = sa.select(accounts.c.id).where(accounts.c.id == account_id)
    if account_id is not None and conn.execute(found).first() is None:
        raise NotFoundError(f"account {account_id} does not exist", field="account_id")
    prefix, key = new_key(token_hex)
    row = conn.execute(
        api_keys.insert()
        .values(
            account_id=account_id, role=role, name=name, prefix=prefix, key_hash=digest(key), created_at=now
        )
        .returning(*api_keys.c)
    ).one()
    return CreatedKey(**_out(row).model_dump(), key=key)


def list_keys(conn: sa.Connection, *, account_id: int | None = None) -> list[KeyOut]:
    """Keys of one account (or all), oldest first, revoked ones included."""
    query = sa.select(api_keys).order_by(api_keys.c.id)
    if account_id is not None:
        query = query.where(api_keys.c.account_id == account_id)
    return [_out(r) for r in conn.execute(query)]


def revoke_key(conn: sa.Connection, key_id: int, *, now: datetime, account_id: int | None = None) -> KeyOut:
    """Revoke a key at once (idempotent: the first revocation time is kept)."""
    where = [api_keys.c.id == key_id]
    if account_id is not None:
        where.append(api_keys.c.account_id == account_id)
    row = conn.execute(sa.select(api_keys).where(*where)).first()
    if row is None:
        raise NotFoundError(f"API key {key_id} does not exist", field="key_id")
    if row.revoked_at is None:
        conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(revoked_at=now))
    return _out(conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).one())


def authenticate(conn: sa.Connection, key: str, *, now: datetime) -> KeyHolder | None:
    """The holder of a valid, unrevoked key of an account that is not suspended; None otherwise."""
    scheme, _, rest = key.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != KEY_SCHEME or not prefix or not secret or len(key) > 200:
        return None
    k = api_keys.c
    row = conn.execute(
        sa.select(k.id, k.account_id, k.role, k.name, k.prefix, k.key_hash, k.revoked_at, k.last_used_at,
                  accounts.c.suspended_at)
        .select_from(api_keys.outerjoin(accounts, accounts.c.id == k.account_id))
        .where(k.prefix == prefix)
    ).first()  # fmt: skip
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest(key)):
        return None
    if row.suspended_at is not None:
        return None
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        conn.execute(api_keys.update().where(k.id == row.id).values(last_used_at=now))
    account_id = None if row.account_id is None else int(row.account_id)
    label = f"key {row.prefix} ({row.name})"
    return KeyHolder(key_id=int(row.id), account_id=account_id, role=str(row.role), label=label)


def default_account(conn: sa.Connection, *, now: datetime, name: str = "default") -> int:
    """The only account, created on first use; an error when there are several to choose from."""
    from contactsync.automation.lists import create_account
    from contactsync.errors import ValidationError

    ids = list(conn.execute(sa.select(accounts.c.id).order_by(accounts.c.id).limit(2)).scalars())
    if not ids:
        return create_account(conn, name=name, now=now)
    if len(ids) > 1:
        raise ValidationError("several accounts exist: choose one with --account", field="account_id")
    return int(ids[0])
