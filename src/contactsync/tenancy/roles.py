"""Roles: what a member or an API key may do in its account. Pure: no I/O.

``viewer`` reads; ``editor`` also changes lists, contacts, automations, actions and deliveries;
``owner`` also manages members and API keys and reveals secrets. The operator is not a role in an
account but a person (or key) over the installation: accounts and users.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """True when holding this role is enough for what needs ``needed``."""
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 1, Role.EDITOR: 2, Role.OWNER: 3}

OPERATOR = "operator"
"""The role of an operator key, and what a route only the operator may call requires."""

ROLES = tuple(r.value for r in Role)


def parse_role(text: str, *, allowed: tuple[str, ...] = ROLES) -> Role:
    """``text`` as a role, or a :class:`~contactsync.errors.ValidationError` naming the choices."""
    from contactsync.errors import ValidationError

    if text not in allowed:
        raise ValidationError(f"role must be one of {', '.join(allowed)}, not {text!r}", field="role")
    return Role(text)
