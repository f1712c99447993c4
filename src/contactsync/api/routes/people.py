"""Accounts and users (operator keys), members of the caller's account (owners), and the audit log.

An operator key belongs to the installation, not to an account: it creates, lists, suspends and
reactivates accounts, manages users, and can hand a new account its first owner or key. Inside an
account, its owners add, re-role and remove members. New users get a one-time password, shown in
the response that created it and never again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contactsync.api.deps import ApiContext, Ctx, Id, Operator, Owner, audit
from contactsync.api.errors import ERROR_RESPONSES
from contactsync.api.pagination import Cursor, Limit, Page, cut
from contactsync.api.routing import UtcRoute
from contactsync.tenancy import keys as key_svc
from contactsync.tenancy import people
from contactsync.tenancy.audit import AuditEntry, AuditFilter, entries, record
from contactsync.tenancy.roles import Role

router = APIRouter(tags=["people"], responses=ERROR_RESPONSES, route_class=UtcRoute)

RoleName = Literal["viewer", "editor", "owner"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AccountIn(_In):
    name: str = Field(min_length=1, max_length=200)
    owner_email: str | None = Field(
        default=None, max_length=320, description="make this person (created if new) the account's owner"
    )


class MemberIn(_In):
    email: str = Field(min_length=3, max_length=320)
    role: RoleName = "viewer"


class RoleIn(_In):
    role: RoleName


class UserIn(_In):
    email: str = Field(min_length=3, max_length=320)
    password: str | None = Field(default=None, min_length=8, max_length=1000, description="made up if absent")
    operator: bool = False


class KeyIn(_In):
    name: str = Field(min_length=1, max_length=200)
    role: RoleName = "editor"


class Added(BaseModel):
    member: people.MemberOut
    one_time_password: str | None = Field(
        description="the new user's password, shown only here; null if they existed"
    )


class AccountCreated(BaseModel):
    account: people.AccountOut
    owner: Added | None


class UserCreated(BaseModel):
    user: people.UserOut
    one_time_password: str | None = Field(description="shown only here; null when a password was given")


class PasswordReset(BaseModel):
    user: people.UserOut
    one_time_password: str = Field(description="the new password, shown only here; every session ended")


def _operator_audit(
    conn: sa.Connection,
    ctx: ApiContext,
    holder: key_svc.KeyHolder,
    action: str,
    target: tuple[str, int],
    *,
    account_id: int | None,
    **detail: object,
) -> None:
    """The audit row of an operator's change (in the change's account, if it concerns one)."""
    kind, ident = target
    now = ctx.runtime.clock()
    record(
        conn,
        holder.actor,
        action,
        account_id=account_id,
        target_type=kind,
        target_id=ident,
        now=now,
        detail=detail,
    )


# --- accounts (operator) ---------------------------------------------------------------------------


@router.get("/accounts")
def list_accounts(ctx: Ctx, holder: Operator) -> list[people.AccountOut]:
    with ctx.tx() as conn:
        return people.list_accounts(conn)


@router.post("/accounts", status_code=201)
def create_account(body: AccountIn, ctx: Ctx, holder: Operator) -> AccountCreated:
    """A new account, and with ``owner_email`` its first owner (created with a one-time password if new)."""
    now = ctx.runtime.clock()
    with ctx.tx() as conn:
        account = people.create_account(conn, name=body.name, now=now)
        owner = None
        if body.owner_email:
            member, password = people.add_member(
                conn, account.id, email=body.owner_email, role=Role.OWNER, now=now
            )
            owner = Added(member=member, one_time_password=password)
        _operator_audit(
            conn,
            ctx,
            holder,
            "account.create",
            account_id=account.id,
            target=("account", account.id),
            name=account.name,
            owner=body.owner_email,
        )
    return AccountCreated(account=account, owner=owner)


@router.get("/accounts/{account_id}")
def get_account(account_id: Id, ctx: Ctx, holder: Operator) -> people.AccountOut:
    with ctx.tx() as conn:
        return people.get_account(conn, account_id)


def _suspension(
    ctx: ApiContext, holder: key_svc.KeyHolder, account_id: int, *, suspended: bool
) -> people.AccountOut:
    with ctx.tx() as conn:
        account = people.set_suspended(conn, account_id, suspended=suspended, now=ctx.runtime.clock())
        action = "account.suspend" if suspended else "account.reactivate"
        _operator_audit(conn, ctx, holder, action, account_id=account_id, target=("account", account_id))
    if not suspended:
        ctx.wake()  # its held deliveries are due again
    return account


@router.post("/accounts/{account_id}/suspend")
def suspend_account(account_id: Id, ctx: Ctx, holder: Operator) -> people.AccountOut:
    """Refuse the account's keys and members at once and hold its deliveries (nothing is dropped)."""
    return _suspension(ctx, holder, account_id, suspended=True)


@router.post("/accounts/{account_id}/reactivate")
def reactivate_account(account_id: Id, ctx: Ctx, holder: Operator) -> people.AccountOut:
    """Let the account's keys and members in again; its held deliveries go out."""
    return _suspension(ctx, holder, account_id, suspended=False)


@router.get("/accounts/{account_id}/members")
def list_account_members(account_id: Id, ctx: Ctx, holder: Operator) -> list[people.MemberOut]:
    with ctx.tx() as conn:
        people.get_account(conn, account_id)
        return people.list_members(conn, account_id)


@router.post("/accounts/{account_id}/members", status_code=201)
def add_account_member(account_id: Id, body: MemberIn, ctx: Ctx, holder: Operator) -> Added:
    with ctx.tx() as conn:
        member, password = people.add_member(
            conn, account_id, email=body.email, role=Role(body.role), now=ctx.runtime.clock()
        )
        _operator_audit(
            conn,
            ctx,
            holder,
            "member.add",
            account_id=account_id,
            target=("user", member.user_id),
            email=member.email,
            role=member.role.value,
        )
    return Added(member=member, one_time_password=password)


@router.post("/accounts/{account_id}/keys", status_code=201)
def create_account_key(account_id: Id, body: KeyIn, ctx: Ctx, holder: Operator) -> key_svc.CreatedKey:
    """A key for the account (its first one, say); ``key`` appears in this response only."""
    with ctx.tx() as conn:
        made = key_svc.create_key(
            conn, account_id=account_id, name=body.name, role=body.role, now=ctx.runtime.clock()
        )
        _operator_audit(
            conn,
            ctx,
            holder,
            "key.create",
            account_id=account_id,
            target=("key", made.id),
            name=made.name,
            role=made.role,
        )
    return made


@router.get("/accounts/{account_id}/keys")
def list_account_keys(account_id: Id, ctx: Ctx, holder: Operator) -> list[key_svc.KeyOut]:
    with ctx.tx() as conn:
        people.get_account(conn, account_id)
        return key_svc.list_keys(conn, account_id=account_id)


@router.delete("/accounts/{account_id}/keys/{key_id}")
def revoke_account_key(account_id: Id, key_id: Id, ctx: Ctx, holder: Operator) -> key_svc.KeyOut:
    """Revoke one of the account's keys (a leaked key, an owner who cannot be reached)."""
    with ctx.tx() as conn:
        people.get_account(conn, account_id)
        revoked = key_svc.revoke_key(conn, key_id, now=ctx.runtime.clock(), account_id=account_id)
        _operator_audit(
            conn, ctx, holder, "key.revoke", ("key", key_id), account_id=account_id, name=revoked.name
        )
    return revoked


@router.get("/accounts/{account_id}/audit")
def account_audit(
    account_id: Id,
    ctx: Ctx,
    holder: Operator,
    action: str = Query(default="", max_length=64, description="an action, or a prefix such as `key.`"),
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[AuditEntry]:
    """The account's audit log, for the operator (its owners read it at /api/audit)."""
    with ctx.tx() as conn:
        people.get_account(conn, account_id)
    return _audit_page(ctx, AuditFilter(account_id=account_id, action=action), cursor, limit)


# --- users (operator) ------------------------------------------------------------------------------


@router.get("/users")
def list_users(ctx: Ctx, holder: Operator) -> list[people.UserOut]:
    with ctx.tx() as conn:
        return people.list_users(conn)


@router.post("/users", status_code=201)
def create_user(body: UserIn, ctx: Ctx, holder: Operator) -> UserCreated:
    with ctx.tx() as conn:
        user, password = people.create_user(
            conn, email=body.email, password=body.password, operator=body.operator, now=ctx.runtime.clock()
        )
        _operator_audit(
            conn,
            ctx,
            holder,
            "user.create",
            account_id=None,
            target=("user", user.id),
            email=user.email,
            operator=user.operator,
        )
    return UserCreated(user=user, one_time_password=password)


@router.get("/users/{user_id}")
def get_user(user_id: Id, ctx: Ctx, holder: Operator) -> people.UserOut:
    with ctx.tx() as conn:
        return people.get_user(conn, user_id)


def _disabled(ctx: ApiContext, holder: key_svc.KeyHolder, user_id: int, *, disabled: bool) -> people.UserOut:
    with ctx.tx() as conn:
        user = people.set_disabled(conn, user_id, disabled=disabled, now=ctx.runtime.clock())
        action = "user.disable" if disabled else "user.enable"
        _operator_audit(conn, ctx, holder, action, account_id=None, target=("user", user_id))
    return user


@router.post("/users/{user_id}/disable")
def disable_user(user_id: Id, ctx: Ctx, holder: Operator) -> people.UserOut:
    """Refuse the user's sign-in and end their sessions now (memberships are kept)."""
    return _disabled(ctx, holder, user_id, disabled=True)


@router.post("/users/{user_id}/enable")
def enable_user(user_id: Id, ctx: Ctx, holder: Operator) -> people.UserOut:
    return _disabled(ctx, holder, user_id, disabled=False)


@router.post("/users/{user_id}/reset-password")
def reset_password(user_id: Id, ctx: Ctx, holder: Operator) -> PasswordReset:
    """A new one-time password; the user's sessions end."""
    with ctx.tx() as conn:
        password = people.set_password(conn, user_id, None)
        assert password is not None
        _operator_audit(conn, ctx, holder, "user.reset_password", account_id=None, target=("user", user_id))
        return PasswordReset(user=people.get_user(conn, user_id), one_time_password=password)


# --- members of the caller's account (owners) ------------------------------------------------------


@router.get("/members")
def list_members(ctx: Ctx, caller: Owner) -> list[people.MemberOut]:
    with ctx.tx() as conn:
        return people.list_members(conn, caller.account_id)


@router.post("/members", status_code=201)
def add_member(body: MemberIn, ctx: Ctx, caller: Owner) -> Added:
    """Add a person by email with a role; someone new gets a one-time password, shown only here."""
    with ctx.tx() as conn:
        member, password = people.add_member(
            conn, caller.account_id, email=body.email, role=Role(body.role), now=ctx.runtime.clock()
        )
        audit(
            conn,
            ctx,
            caller,
            "member.add",
            "user",
            member.user_id,
            email=member.email,
            role=member.role.value,
        )
    return Added(member=member, one_time_password=password)


@router.patch("/members/{user_id}")
def change_role(user_id: Id, body: RoleIn, ctx: Ctx, caller: Owner) -> people.MemberOut:
    """A member's new role (the last owner cannot be demoted); takes effect on their next request."""
    with ctx.tx() as conn:
        member = people.change_role(conn, caller.account_id, user_id, Role(body.role))
        audit(conn, ctx, caller, "member.role", "user", user_id, email=member.email, role=member.role.value)
        return member


@router.delete("/members/{user_id}")
def remove_member(user_id: Id, ctx: Ctx, caller: Owner) -> people.MemberOut:
    """Remove a member; their sessions in this account end now (the last owner cannot be removed)."""
    with ctx.tx() as conn:
        member = people.remove_member(conn, caller.account_id, user_id)
        audit(conn, ctx, caller, "member.remove", "user", user_id, email=member.email)
        return member


# --- audit log (owners) ----------------------------------------------------------------------------


@router.get("/audit")
def audit_log(
    ctx: Ctx,
    caller: Owner,
    actor: str = Query(
        default="", max_length=320, description="part of the actor's email or key name (any case)"
    ),
    action: str = Query(
        default="", max_length=64, description="an action, or a prefix such as `automation.` (any case)"
    ),
    target_type: str = Query(default="", max_length=32),
    target_id: str = Query(default="", max_length=64),
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[AuditEntry]:
    """Every change made in the account, newest first: who, what, which target, when."""
    where = AuditFilter(
        account_id=caller.account_id,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        since=_naive(since),
        until=_naive(until),
    )
    return _audit_page(ctx, where, cursor, limit)


def _audit_page(ctx: ApiContext, where: AuditFilter, cursor: str | None, limit: int) -> Page[AuditEntry]:
    """One page of the log, newest first (the cursor is the last id of the previous page)."""
    before = min(int(cursor), 2**63 - 1) if cursor else None
    with ctx.tx() as conn:
        found = entries(conn, where, before_id=before, limit=limit + 1)
    n, nxt = cut([e.id for e in found], limit)
    return Page(items=list(found[:n]), next_cursor=nxt)


def _naive(when: datetime | None) -> datetime | None:
    return None if when is None else when.astimezone(UTC).replace(tzinfo=None)
