"""What every route needs: the app's context, a transaction, the caller's account, and ownership checks.

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

from contactsync.api import keys
from contactsync.api.background import RunWorkers
from contactsync.api.errors import ApiError
from contactsync.automation.runtime import Runtime
from contactsync.db.platform import actions, automations, contacts, deliveries, endpoints, lists
from contactsync.delivery.metrics import DeliveryMetrics
from contactsync.errors import NotFoundError
from contactsync.settings import Settings

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
        """One transaction: committed before the response is built, rolled back on any error."""
        with self.engine.begin() as conn:
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


def principal(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> keys.Principal:
    """The caller's account; 401 for a missing, malformed, unknown or revoked key."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "unauthorized", "an API key is required: Authorization: Bearer <key>")
    with ctx.tx() as conn:
        found = keys.authenticate(conn, credentials.credentials, now=ctx.runtime.clock())
    if found is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    return found


Caller = Annotated[keys.Principal, Depends(principal)]


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
