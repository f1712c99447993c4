"""Who is signed in to the platform's admin UI, in which account, with which role.

A signed-in session names a user and the account they work in. Every request reads the user, their
role in that account and the accounts they may switch to afresh, so a removal, a suspension, a
disabled user or a new role holds from the next request on, even were a session row left behind.
Each platform page names what it needs: a role in the account (``viewer``, ``editor``, ``owner``),
the ``operator``, or only a signed-in person (``signed_in``: log out, switch account, own password).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from contactsync.errors import NotFoundError
from contactsync.tenancy import audit, people
from contactsync.tenancy.keys import Principal
from contactsync.tenancy.roles import OPERATOR, Role

SIGNED_IN = "signed_in"
NEEDS = (Role.VIEWER.value, Role.EDITOR.value, Role.OWNER.value, OPERATOR, SIGNED_IN)
"""What a platform page may declare it needs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """A signed-in user, the account they work in (none: the operator outside every account) and
    their role there, and the places the account switcher offers."""

    user_id: int
    email: str
    operator: bool
    account_id: int | None
    account_name: str
    role: Role | None
    places: tuple[people.Place, ...]

    @property
    def actor(self) -> audit.Actor:
        return audit.Actor(kind="user", id=self.user_id, label=self.email)

    @property
    def principal(self) -> Principal:
        """The user as a caller in their account, for the API's ownership checks (``deps.own_*``)."""
        if self.account_id is None or self.role is None:
            raise NotFoundError("no account is chosen: pick one in the account switcher", field="account_id")
        return Principal(account_id=self.account_id, role=self.role, actor=self.actor)

    def may(self, needed: str) -> bool:
        """True when this user may use a page that needs ``needed`` (one of :data:`NEEDS`)."""
        if needed == SIGNED_IN:
            return True
        if needed == OPERATOR:
            return self.operator
        return self.role is not None and self.role.allows(Role(needed))

    def record(
        self,
        conn: sa.Connection,
        action: str,
        target_type: str,
        target_id: int | str | None = None,
        *,
        now: datetime,
        **detail: Any,
    ) -> None:
        """The audit row of a change this user made in their account (in the change's transaction)."""
        audit.record(
            conn,
            self.actor,
            action,
            account_id=self.account_id,
            target_type=target_type,
            target_id=target_id,
            now=now,
            detail=detail,
        )


def user_of(principal: str) -> int | None:
    """The user id a session's principal names (``user:<id>``), or None for anything else."""
    kind, _, raw = principal.partition(":")
    return int(raw) if kind == "user" and raw.isdigit() and len(raw) < 19 else None


def first_place(places: Sequence[people.Place]) -> int | None:
    """The account a user lands in after signing in: the first one not suspended."""
    return next((p.account_id for p in places if not p.suspended), None)


def identify(conn: sa.Connection, principal: str, account_id: int | None) -> Identity | None:
    """Who a session is now; None when it must end (unknown or disabled user, no longer a member, the
    account suspended, or no account at all for someone who is not the operator)."""
    user_id = user_of(principal)
    if user_id is None:
        return None
    try:
        user = people.get_user(conn, user_id)
    except NotFoundError:
        return None
    if user.disabled_at is not None:
        return None
    role = None
    if account_id is not None:
        role = people.role_in(conn, user, account_id)
        if role is None:
            return None
    elif not user.operator:
        return None
    places = tuple(people.places(conn, user))
    return Identity(
        user_id=user.id,
        email=user.email,
        operator=user.operator,
        account_id=account_id,
        account_name=next((p.name for p in places if p.account_id == account_id), ""),
        role=role,
        places=places,
    )
