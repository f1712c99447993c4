"""Users, their memberships (a role per account), accounts and their suspension.

A user signs in with an email and an argon2-hashed password and belongs to accounts through
memberships; the operator flag makes a user the installation's operator, who sees every account as
its owner. Whatever ends someone's access (removal, suspension, a new password, disabling the user)
deletes their sessions in the same transaction, so it holds from the next request on; the session
check also re-reads the membership on every request, as a second lock.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel

from contactsync.db.errors import translated
from contactsync.db.platform import accounts, admin_sessions, memberships, users
from contactsync.delivery.outbox import notify
from contactsync.errors import ConfigError, ConflictError, DuplicateKeyError, NotFoundError, ValidationError
from contactsync.tenancy.roles import Role

MAX_EMAIL = 320
MIN_PASSWORD = 8
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("contactsync: a password nobody has")
"""Verified against when the email is unknown, so a wrong email takes as long as a wrong password."""


class UserOut(BaseModel):
    id: int
    email: str
    operator: bool
    created_at: datetime
    disabled_at: datetime | None


class AccountOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    suspended_at: datetime | None


class MemberOut(BaseModel):
    user_id: int
    email: str
    role: Role
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Place:
    """One account a user can work in, and the role they have there."""

    account_id: int
    name: str
    role: Role
    suspended: bool


def principal_of(user_id: int) -> str:
    """How sessions name a user."""
    return f"user:{user_id}"


def normalize_email(text: str) -> str:
    email = text.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or not domain or len(email) > MAX_EMAIL or any(c.isspace() for c in email):
        raise ValidationError(f"not an email address: {text[:80]!r}", field="email")
    return email


def hash_password(password: str, *, check: bool = True) -> str:
    """The argon2 hash; ``check=False`` skips the length rule (an operator's configured admin password,
    which installations set before the rule existed)."""
    if check and len(password) < MIN_PASSWORD:
        raise ValidationError(f"a password needs at least {MIN_PASSWORD} characters", field="password")
    return _hasher.hash(password)


def one_time_password() -> str:
    """A password to hand over once (shown once, never stored in clear)."""
    return secrets.token_urlsafe(12)


def _user_out(row: sa.Row[tuple[object, ...]]) -> UserOut:
    return UserOut.model_validate(row._asdict())  # password_hash is not a field: ignored


# --- users ---------------------------------------------------------------------------------------


def create_user(
    conn: sa.Connection,
    *,
    email: str,
    password: str | None,
    now: datetime,
    operator: bool = False,
    hashed: bool = False,
    strict: bool = True,
) -> tuple[UserOut, str | None]:
    """A new user; without ``password`` one is made up and returned (the only copy in clear).

    ``hashed``: ``password`` is an argon2 hash already (the configured admin password may be one);
    anything else is hashed, whatever it looks like. ``strict=False`` accepts a password shorter than
    the rule (only the configured admin password, set before the rule existed).
    """
    address = normalize_email(email)
    if conn.execute(sa.select(users.c.id).where(users.c.email == address)).first() is not None:
        raise ConflictError(f"a user with email {address} exists", field="email")
    generated = one_time_password() if password is None else None
    if hashed and password:
        stored = password
    else:
        stored = hash_password(password if password is not None else generated or "", check=strict)
    try:
        with translated():
            row = conn.execute(
                users.insert()
                .values(email=address, password_hash=stored, operator=operator, created_at=now)
                .returning(*users.c)
            ).one()
    except DuplicateKeyError as exc:  # the same email added at the same moment elsewhere
        raise ConflictError(f"a user with email {address} exists", field="email") from exc
    return _user_out(row), generated


def get_user(conn: sa.Connection, user_id: int) -> UserOut:
    row = conn.execute(sa.select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise NotFoundError(f"user {user_id} does not exist", field="user_id")
    return _user_out(row)


def find_user(conn: sa.Connection, email: str) -> UserOut | None:
    row = conn.execute(sa.select(users).where(users.c.email == normalize_email(email))).first()
    return None if row is None else _user_out(row)


def list_users(conn: sa.Connection) -> list[UserOut]:
    return [_user_out(r) for r in conn.execute(sa.select(users).order_by(users.c.id))]


def authenticate(conn: sa.Connection, email: str, password: str) -> UserOut | None:
    """The user whose email and password these are, if not disabled; ``None`` for anything else."""
    try:
        address = normalize_email(email)
    except ValidationError:
        address = ""
    row = conn.execute(sa.select(users).where(users.c.email == address)).first() if address else None
    try:
        ok = bool(_hasher.verify(row.password_hash if row is not None else _DUMMY_HASH, password))
    except (VerificationError, InvalidHashError):
        ok = False
    if row is None or not ok or row.disabled_at is not None:
        return None
    return _user_out(row)


def set_password(conn: sa.Connection, user_id: int, password: str | None) -> str | None:
    """A new password (made up when ``None``, and returned) and every session of the user ended; an
    empty or short one is refused (never quietly replaced by one nobody is shown)."""
    get_user(conn, user_id)
    generated = one_time_password() if password is None else None
    conn.execute(
        users.update()
        .where(users.c.id == user_id)
        .values(password_hash=hash_password(password if password is not None else generated or ""))
    )
    end_sessions(conn, user_id)
    return generated


def set_password_hash(conn: sa.Connection, user_id: int, password_hash: str) -> None:
    """Store a password hashed beforehand (outside the transaction: argon2 is slow) and end every
    session of the user."""
    get_user(conn, user_id)
    conn.execute(users.update().where(users.c.id == user_id).values(password_hash=password_hash))
    end_sessions(conn, user_id)


def set_disabled(conn: sa.Connection, user_id: int, *, disabled: bool, now: datetime) -> UserOut:
    """Disable (sessions end, sign-in refused) or re-enable a user."""
    user = get_user(conn, user_id)
    if disabled and user.operator:
        _lock_operators(conn)
    if disabled and user.operator and _operators(conn, active_only=True) <= 1 and user.disabled_at is None:
        raise ConflictError("the last active operator cannot be disabled", field="user_id")
    conn.execute(users.update().where(users.c.id == user_id).values(disabled_at=(now if disabled else None)))
    if disabled:
        end_sessions(conn, user_id)
    return get_user(conn, user_id)


def set_operator(conn: sa.Connection, user_id: int, *, operator: bool) -> UserOut:
    user = get_user(conn, user_id)
    if user.operator and not operator:
        _lock_operators(conn)
    if user.operator and not operator and _operators(conn, active_only=True) <= 1:
        raise ConflictError("the last active operator cannot stop being one", field="user_id")
    conn.execute(users.update().where(users.c.id == user_id).values(operator=operator))
    end_sessions(conn, user_id)
    return get_user(conn, user_id)


def _lock_operators(conn: sa.Connection) -> None:
    """Take the operators' rows (PostgreSQL; SQLite's writers are serial already), so that two
    operators disabled at once cannot both pass the last-operator check."""
    conn.execute(sa.select(users.c.id).where(users.c.operator.is_(True)).with_for_update()).all()


def _operators(conn: sa.Connection, *, active_only: bool) -> int:
    query = sa.select(sa.func.count()).select_from(users).where(users.c.operator.is_(True))
    if active_only:
        query = query.where(users.c.disabled_at.is_(None))
    return int(conn.execute(query).scalar_one())


def bootstrap_operator(conn: sa.Connection, *, email: str, password: str, now: datetime) -> UserOut | None:
    """On an installation with no operator yet, make one from the configured admin password (the
    password itself or its argon2 hash); ``None`` when there is one already or no password."""
    if not password or _operators(conn, active_only=False):
        return None
    if find_user(conn, email) is not None:
        # never promote an existing user: any account owner may have created this one (adding a
        # member by email), and would become the installation's operator
        raise ConfigError(
            f"CONTACTSYNC_ADMIN_EMAIL {email!r} belongs to an existing user, who is not made the operator: "
            "choose an email no user has, or make a trusted user the operator with "
            "`contactsync users create EMAIL --operator`"
        )
    hashed = password.startswith("$argon2")
    user, _ = create_user(
        conn, email=email, password=password, now=now, operator=True, hashed=hashed, strict=False
    )
    return user


def end_sessions(conn: sa.Connection, user_id: int, *, account_id: int | None = None) -> int:
    """End the user's admin sessions (only those working in ``account_id``, when given)."""
    where = [admin_sessions.c.principal == principal_of(user_id)]
    if account_id is not None:
        where.append(admin_sessions.c.account_id == account_id)
    return int(conn.execute(admin_sessions.delete().where(*where)).rowcount)


# --- accounts ------------------------------------------------------------------------------------


def _account_out(row: sa.Row[tuple[object, ...]]) -> AccountOut:
    return AccountOut.model_validate(row._asdict())


def create_account(conn: sa.Connection, *, name: str, now: datetime) -> AccountOut:
    from contactsync.automation.lists import create_account as insert_account

    if not name.strip():
        raise ValidationError("an account needs a name", field="name")
    return get_account(conn, insert_account(conn, name=name.strip()[:200], now=now))


def get_account(conn: sa.Connection, account_id: int) -> AccountOut:
    row = conn.execute(sa.select(accounts).where(accounts.c.id == account_id)).first()
    if row is None:
        raise NotFoundError(f"account {account_id} does not exist", field="account_id")
    return _account_out(row)


def list_accounts(conn: sa.Connection) -> list[AccountOut]:
    return [_account_out(r) for r in conn.execute(sa.select(accounts).order_by(accounts.c.id))]


def set_suspended(conn: sa.Connection, account_id: int, *, suspended: bool, now: datetime) -> AccountOut:
    """Suspend (keys refused, members' sessions ended, deliveries held) or reactivate an account.

    Deliveries are not touched: the claim skips a suspended account's rows, so they wait exactly as
    they were and go out in order once it is reactivated (which wakes the dispatchers listening on
    PostgreSQL at commit, as an enqueue does; the caller wakes an in-process one).
    """
    account = get_account(conn, account_id)
    if suspended and account.suspended_at is None:
        conn.execute(accounts.update().where(accounts.c.id == account_id).values(suspended_at=now))
        operators = conn.execute(sa.select(users.c.id).where(users.c.operator.is_(True))).scalars()
        conn.execute(
            admin_sessions.delete().where(
                admin_sessions.c.account_id == account_id,
                admin_sessions.c.principal.not_in([principal_of(i) for i in operators]),
            )
        )
    elif not suspended and account.suspended_at is not None:
        conn.execute(accounts.update().where(accounts.c.id == account_id).values(suspended_at=None))
        notify(conn)
    return get_account(conn, account_id)


# --- memberships ---------------------------------------------------------------------------------


def list_members(conn: sa.Connection, account_id: int) -> list[MemberOut]:
    m, u = memberships.c, users.c
    rows = conn.execute(
        sa.select(m.user_id, u.email, m.role, m.created_at)
        .join(users, u.id == m.user_id)
        .where(m.account_id == account_id)
        .order_by(u.email)
    )
    return [MemberOut.model_validate(r._asdict()) for r in rows]


def _lock_account(conn: sa.Connection, account_id: int) -> None:
    """Take the account's row (PostgreSQL; SQLite's writers are serial already) before changing who
    owns it: two owners demoted or removed at once then decide one after the other, and the second
    sees the first's change, so the last-owner rule holds."""
    query = sa.select(accounts.c.id).where(accounts.c.id == account_id).with_for_update()
    if conn.execute(query).first() is None:
        raise NotFoundError(f"account {account_id} does not exist", field="account_id")


def _member(conn: sa.Connection, account_id: int, user_id: int) -> MemberOut:
    for member in list_members(conn, account_id):
        if member.user_id == user_id:
            return member
    raise NotFoundError(f"user {user_id} is not a member of this account", field="user_id")


def add_member(
    conn: sa.Connection, account_id: int, *, email: str, role: Role, now: datetime
) -> tuple[MemberOut, str | None]:
    """Add a user (created with a one-time password, returned, if new) to the account with ``role``."""
    get_account(conn, account_id)
    user = find_user(conn, email)
    password = None
    if user is None:
        user, password = create_user(conn, email=email, password=None, now=now)
    exists = sa.select(memberships.c.id).where(
        memberships.c.account_id == account_id, memberships.c.user_id == user.id
    )
    if conn.execute(exists).first() is not None:
        raise ConflictError(f"{user.email} is already a member", field="email")
    try:
        with translated():
            conn.execute(
                memberships.insert().values(
                    account_id=account_id, user_id=user.id, role=role.value, created_at=now
                )
            )
    except DuplicateKeyError as exc:  # added at the same moment elsewhere
        raise ConflictError(f"{user.email} is already a member", field="email") from exc
    return _member(conn, account_id, user.id), password


def _owners(conn: sa.Connection, account_id: int) -> int:
    m = memberships.c
    query = sa.select(sa.func.count()).where(m.account_id == account_id, m.role == Role.OWNER.value)
    return int(conn.execute(query).scalar_one())


def change_role(conn: sa.Connection, account_id: int, user_id: int, role: Role) -> MemberOut:
    """A member's new role; the account's last owner cannot be demoted (someone must manage it)."""
    _lock_account(conn, account_id)
    member = _member(conn, account_id, user_id)
    if member.role is Role.OWNER and role is not Role.OWNER and _owners(conn, account_id) <= 1:
        raise ConflictError(
            "the account's last owner cannot be demoted; make another owner first", field="role"
        )
    m = memberships.c
    conn.execute(
        memberships.update().where(m.account_id == account_id, m.user_id == user_id).values(role=role.value)
    )
    return _member(conn, account_id, user_id)


def remove_member(conn: sa.Connection, account_id: int, user_id: int) -> MemberOut:
    """Remove a member; their sessions in this account end now."""
    _lock_account(conn, account_id)
    member = _member(conn, account_id, user_id)
    if member.role is Role.OWNER and _owners(conn, account_id) <= 1:
        raise ConflictError(
            "the account's last owner cannot be removed; make another owner first", field="user_id"
        )
    m = memberships.c
    conn.execute(memberships.delete().where(m.account_id == account_id, m.user_id == user_id))
    end_sessions(conn, user_id, account_id=account_id)
    return member


def places(conn: sa.Connection, user: UserOut) -> list[Place]:
    """The accounts ``user`` may work in: their memberships, or every account for the operator."""
    a = accounts.c
    if user.operator:
        every = conn.execute(sa.select(a.id, a.name, a.suspended_at).order_by(a.id)).all()
        return [Place(r.id, r.name, Role.OWNER, r.suspended_at is not None) for r in every]
    m = memberships.c
    rows = conn.execute(
        sa.select(a.id, a.name, a.suspended_at, m.role)
        .join(memberships, m.account_id == a.id)
        .where(m.user_id == user.id)
        .order_by(a.id)
    ).all()
    return [Place(r.id, r.name, Role(r.role), r.suspended_at is not None) for r in rows]


def role_in(conn: sa.Connection, user: UserOut, account_id: int) -> Role | None:
    """The user's role in the account now; ``None`` when they may not work there (not a member, or
    the account is suspended: only the operator still enters a suspended account)."""
    if user.disabled_at is not None:
        return None
    if user.operator:
        found = conn.execute(sa.select(accounts.c.id).where(accounts.c.id == account_id)).first()
        return Role.OWNER if found is not None else None
    m, a = memberships.c, accounts.c
    row = conn.execute(
        sa.select(m.role)
        .join(accounts, a.id == m.account_id)
        .where(m.user_id == user.id, m.account_id == account_id, a.suspended_at.is_(None))
    ).first()
    return None if row is None else Role(row.role)
