"""What every route needs: the app's context, a transaction, the caller's role, and ownership checks.

Each route names the role it needs (``Viewer``, ``Editor``, ``Owner``, ``Operator``); the role
matrix test reads them from the route table, so a route without one cannot go unnoticed.

One account's key never sees another account's rows: every id is checked against the caller's
account on the row it names (``account_id`` on the row itself or on its list), never through ids
that may since have been deleted, and a foreign id answers 404 exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry

from contactsync.api.background import RunWorkers
from contactsync.api.errors import ApiError
from contactsync.automation.runtime import Runtime
from contactsync.db.errors import translated
from contactsync.db.platform import actions, automations, contacts, deliveries, endpoints, fields, lists
from contactsync.delivery.metrics import DeliveryMetrics
from contactsync.errors import NotFoundError
from contactsync.settings import Settings
from contactsync.tenancy import keys
from contactsync.tenancy.audit import record
from contactsync.tenancy.roles import OPERATOR, Role

MAX_ID = 2**63 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
"""A path id: positive and within 64 bits, so no database sees an id it cannot hold."""


@dataclass(slots=True, kw_only=True)
class ApiContext:
    """Per-app state, created by the app factory (never module-level)."""

    settings: Settings
    engine: sa.Engine
    runtime: Runtime
    wake_hooks: list[Callable[[], None]] = field(default_factory=list)
    """Called after a transaction that may have enqueued deliveries commits (in-process dispatcher)."""
    runs: RunWorkers = field(init=False)
    metrics: DeliveryMetrics = field(init=False)
    """Served on the metrics port (``metrics_app``); counters move when this app runs the in-process
    dispatcher."""

    def __post_init__(self) -> None:
        self.runs = RunWorkers(self.engine, self.runtime, on_enqueued=self.wake)
        self.metrics = DeliveryMetrics(CollectorRegistry())

    @contextmanager
    def tx(self) -> Iterator[sa.Connection]:
        """One transaction: committed before the response is built, rolled back on any error; the
        database's refusals (its commit's too) raised as the package's errors."""
        with translated(), self.engine.begin() as conn:
            yield conn

    def wake(self) -> None:
        for hook in self.wake_hooks:
            hook()


def context(request: Request) -> ApiContext:
    ctx = request.app.state.contactsync
    assert isinstance(ctx, ApiContext)
    return ctx


Ctx = Annotated[ApiContext, Depends(context)]

_bearer = HTTPBearer(
    auto_error=False, description="An API key from `contactsync keys create` or POST /api/keys"
)


def key_holder(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> keys.KeyHolder:
    """Whoever holds the presented key; 401 for a missing, malformed, unknown or revoked key, or
    one of a suspended account."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "unauthorized", "an API key is required: Authorization: Bearer <key>")
    with ctx.tx() as conn:
        found = keys.authenticate(conn, credentials.credentials, now=ctx.runtime.clock())
    if found is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key, or its account is suspended")
    return found


Holder = Annotated[keys.KeyHolder, Depends(key_holder)]


class _Needs:
    """A route's authorization: the role it needs (a dependency; the role table reads ``needed``)."""

    def __init__(self, needed: str) -> None:
        self.needed = needed

    def __repr__(self) -> str:
        return f"needs({self.needed})"


class _AccountRole(_Needs):
    def __init__(self, needed: Role) -> None:
        super().__init__(needed.value)
        self.role = needed

    def __call__(self, holder: Holder) -> keys.Principal:
        if holder.account_id is None:
            raise ApiError(
                403, "forbidden", "an operator key manages accounts and users; use an account's key here"
            )
        role = Role(holder.role)
        if not role.allows(self.role):
            raise ApiError(403, "forbidden", f"this needs the {self.role} role; the key is {role}")
        return keys.Principal(account_id=holder.account_id, role=role, actor=holder.actor)


class _OperatorRole(_Needs):
    def __init__(self) -> None:
        super().__init__(OPERATOR)

    def __call__(self, holder: Holder) -> keys.KeyHolder:
        if holder.role != OPERATOR:
            raise ApiError(403, "forbidden", "this needs an operator key")
        return holder


Viewer = Annotated[keys.Principal, Depends(_AccountRole(Role.VIEWER))]
"""Reads of the caller's account."""
Editor = Annotated[keys.Principal, Depends(_AccountRole(Role.EDITOR))]
"""Changes to lists, contacts, automations, actions and deliveries."""
Owner = Annotated[keys.Principal, Depends(_AccountRole(Role.OWNER))]
"""Members, API keys, secret reveal."""
Operator = Annotated[keys.KeyHolder, Depends(_OperatorRole())]
"""Accounts and users of the installation."""


def needed_role(dependency: object) -> str | None:
    """The role a dependency stands for (``viewer`` … ``operator``), or None when it is not one."""
    return dependency.needed if isinstance(dependency, _Needs) else None


def audit(
    conn: sa.Connection,
    ctx: ApiContext,
    caller: keys.Principal,
    action: str,
    target_type: str,
    target_id: int | str | None = None,
    **detail: object,
) -> None:
    """The audit row of a change the caller made in its account (in the change's transaction)."""
    record(
        conn,
        caller.actor,
        action,
        account_id=caller.account_id,
        target_type=target_type,
        target_id=target_id,
        now=ctx.runtime.clock(),
        detail=detail,
    )


# --- ownership: SQL fragments and checks ---------------------------------------------------------


def account_lists(account_id: int) -> sa.Select[int]:
    return sa.select(lists.c.id).where(lists.c.account_id == account_id)


def account_automations(account_id: int) -> sa.Select[int]:
    return sa.select(automations.c.id).where(automations.c.list_id.in_(account_lists(account_id)))


def account_actions(account_id: int) -> sa.Select[int]:
    return sa.select(actions.c.id).where(actions.c.automation_id.in_(account_automations(account_id)))


def delivery_owned(account_id: int) -> sa.ColumnElement[bool]:
    """A delivery is its own row's account's, whatever became of its action, automation or contact."""
    owned: sa.ColumnElement[bool] = deliveries.c.account_id == account_id
    return owned


def endpoint_owned(account_id: int) -> sa.ColumnElement[bool]:
    """Endpoints are per account."""
    owned: sa.ColumnElement[bool] = endpoints.c.account_id == account_id
    return owned


def _check(conn: sa.Connection, query: sa.Select[int], what: str, ident: int, fld: str) -> None:
    if conn.execute(query.limit(1)).first() is None:
        raise NotFoundError(f"{what} {ident} does not exist", field=fld)


def own_list(conn: sa.Connection, caller: keys.Principal, list_id: int, *, field: str = "list_id") -> None:
    q = sa.select(lists.c.id).where(lists.c.id == list_id, lists.c.account_id == caller.account_id)
    _check(conn, q, "list", list_id, field)


def own_field(conn: sa.Connection, caller: keys.Principal, field_id: int) -> None:
    q = sa.select(fields.c.id).where(
        fields.c.id == field_id, fields.c.list_id.in_(account_lists(caller.account_id))
    )
    _check(conn, q, "field", field_id, "field_id")


def own_contact(
    conn: sa.Connection, caller: keys.Principal, contact_id: int, *, field: str = "contact_id"
) -> None:
    q = sa.select(contacts.c.id).where(
        contacts.c.id == contact_id, contacts.c.list_id.in_(account_lists(caller.account_id))
    )
    _check(conn, q, "contact", contact_id, field)


def own_automation(
    conn: sa.Connection, caller: keys.Principal, automation_id: int, *, field: str = "automation_id"
) -> None:
    q = account_automations(caller.account_id).where(automations.c.id == automation_id)
    _check(conn, q, "automation", automation_id, field)


def own_action(
    conn: sa.Connection, caller: keys.Principal, action_id: int, *, field: str = "action_id"
) -> None:
    q = account_actions(caller.account_id).where(actions.c.id == action_id)
    _check(conn, q, "action", action_id, field)


def own_delivery(conn: sa.Connection, caller: keys.Principal, delivery_id: int) -> None:
    q = sa.select(deliveries.c.id).where(deliveries.c.id == delivery_id, delivery_owned(caller.account_id))
    _check(conn, q, "delivery", delivery_id, "delivery_id")


def own_endpoint(conn: sa.Connection, caller: keys.Principal, endpoint_id: int) -> str:
    """The endpoint's ``scheme://host:port`` when the caller may see it."""
    found = conn.execute(
        sa.select(endpoints.c.endpoint).where(
            endpoints.c.id == endpoint_id, endpoint_owned(caller.account_id)
        )
    ).scalar()
    if found is None:
        raise NotFoundError(f"endpoint {endpoint_id} does not exist", field="endpoint_id")
    return str(found)
