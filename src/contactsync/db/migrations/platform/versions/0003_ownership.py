"""ownership on every row: account_id on the outbox, endpoints, entries and runs; ids never reused;
server-side admin sessions

Revision ID: 0003
Revises: 0002

Existing rows get the account they were reached through before (a delivery: its action's, else its
automation's, else its contact's account). A delivery none of these lead to any more can never be
signed nor shown to anyone, so it is removed with its attempts. Endpoints shared by several accounts
are split into one row per account, each keeping the shared health; notifications of such a shared
endpoint may name another account's URL, so only those of single-account endpoints are kept.
On SQLite every table is rebuilt with ``AUTOINCREMENT`` (foreign keys are off during the migration,
see :func:`contactsync.db.migrate.upgrade`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

OWNED = (
    "automation_entries",
    "manual_runs",
    "deliveries",
    "delivery_attempts",
    "endpoints",
    "endpoint_events",
)
WITH_IDS = (
    "accounts",
    "lead_status_thresholds",
    "api_keys",
    "lists",
    "fields",
    "contacts",
    "activities",
    "automations",
    "actions",
    *OWNED,
)

_m = sa.MetaData()
accounts = sa.Table("accounts", _m, sa.Column("id", Id))
lists = sa.Table("lists", _m, sa.Column("id", Id), sa.Column("account_id", Id))
contacts = sa.Table("contacts", _m, sa.Column("id", Id), sa.Column("list_id", Id))
automations = sa.Table("automations", _m, sa.Column("id", Id), sa.Column("list_id", Id))
actions = sa.Table(
    "actions", _m, sa.Column("id", Id), sa.Column("automation_id", Id), sa.Column("endpoint", sa.String)
)
entries = sa.Table("automation_entries", _m, sa.Column("automation_id", Id), sa.Column("account_id", Id))
runs = sa.Table("manual_runs", _m, sa.Column("automation_id", Id), sa.Column("account_id", Id))
deliveries = sa.Table(
    "deliveries",
    _m,
    sa.Column("id", Id),
    sa.Column("account_id", Id),
    sa.Column("action_id", Id),
    sa.Column("automation_id", Id),
    sa.Column("contact_id", Id),
    sa.Column("endpoint", sa.String),
)
attempts = sa.Table("delivery_attempts", _m, sa.Column("delivery_id", Id), sa.Column("account_id", Id))
HEALTH = (
    "disabled_at",
    "disabled_reason",
    "failing_since",
    "last_success_at",
    "last_failure_at",
    "edited_at",
    "max_in_flight",
    "rate_limit_per_s",
)
endpoints = sa.Table(
    "endpoints",
    _m,
    sa.Column("id", Id),
    sa.Column("account_id", Id),
    sa.Column("endpoint", sa.String),
    sa.Column("disabled_at", sa.DateTime),
    sa.Column("disabled_reason", sa.Text),
    sa.Column("failing_since", sa.DateTime),
    sa.Column("last_success_at", sa.DateTime),
    sa.Column("last_failure_at", sa.DateTime),
    sa.Column("edited_at", sa.DateTime),
    sa.Column("max_in_flight", sa.Integer),
    sa.Column("rate_limit_per_s", sa.Float),
)
events = sa.Table(
    "endpoint_events", _m, sa.Column("id", Id), sa.Column("account_id", Id), sa.Column("endpoint", sa.String)
)


def _sqlite() -> bool:
    return bool(op.get_bind().dialect.name == "sqlite")


@contextmanager
def _batch(table: str) -> Iterator[Any]:
    """Alter ``table``; on SQLite it is rebuilt, with ``AUTOINCREMENT`` when it has an id."""
    kwargs: dict[str, Any] = {}
    if _sqlite():
        kwargs = {"recreate": "always"}
        if table in WITH_IDS:
            kwargs["table_kwargs"] = {"sqlite_autoincrement": True}
    with op.batch_alter_table(table, **kwargs) as batch:
        yield batch


def _account_of_automation(automation_id: sa.ColumnElement[Any]) -> sa.ScalarSelect[Any]:
    return (
        sa.select(lists.c.account_id)
        .join(automations, automations.c.list_id == lists.c.id)
        .where(automations.c.id == automation_id)
        .scalar_subquery()
    )


def _backfill() -> None:
    bind = op.get_bind()
    bind.execute(entries.update().values(account_id=_account_of_automation(entries.c.automation_id)))
    bind.execute(runs.update().values(account_id=_account_of_automation(runs.c.automation_id)))
    d = deliveries.c
    via_action = (
        sa.select(lists.c.account_id)
        .select_from(actions.join(automations, automations.c.id == actions.c.automation_id))
        .join(lists, lists.c.id == automations.c.list_id)
        .where(actions.c.id == d.action_id)
        .scalar_subquery()
    )
    via_contact = (
        sa.select(lists.c.account_id)
        .join(contacts, contacts.c.list_id == lists.c.id)
        .where(contacts.c.id == d.contact_id)
        .scalar_subquery()
    )
    bind.execute(
        deliveries.update().values(
            account_id=sa.func.coalesce(via_action, _account_of_automation(d.automation_id), via_contact)
        )
    )
    untraced = sa.select(d.id).where(d.account_id.is_(None))
    bind.execute(attempts.delete().where(attempts.c.delivery_id.in_(untraced)))
    bind.execute(deliveries.delete().where(d.account_id.is_(None)))
    bind.execute(
        attempts.update().values(
            account_id=sa.select(d.account_id).where(d.id == attempts.c.delivery_id).scalar_subquery()
        )
    )
    _split_endpoints(bind)


def _split_endpoints(bind: sa.Connection) -> None:
    """One endpoint row per account using it, each with the health the shared row had."""
    e = endpoints.c
    shared = {row.endpoint: row for row in bind.execute(sa.select(endpoints).where(e.account_id.is_(None)))}
    users: dict[str, set[int]] = defaultdict(set)
    by_action = (
        sa.select(lists.c.account_id, actions.c.endpoint)
        .select_from(actions.join(automations, automations.c.id == actions.c.automation_id))
        .join(lists, lists.c.id == automations.c.list_id)
        .distinct()
    )
    by_delivery = sa.select(deliveries.c.account_id, deliveries.c.endpoint).distinct()
    for query in (by_action, by_delivery):
        for account_id, name in bind.execute(query):
            users[name].add(int(account_id))
    rows = [
        {"account_id": account_id, "endpoint": name, **{k: getattr(shared[name], k) for k in HEALTH}}
        for name in sorted(shared)
        for account_id in sorted(users.get(name, ()))
    ]
    if rows:
        bind.execute(endpoints.insert(), rows)
    bind.execute(endpoints.delete().where(e.account_id.is_(None)))
    single = {name: next(iter(ids)) for name, ids in users.items() if len(ids) == 1}
    for name, account_id in sorted(single.items()):
        bind.execute(events.update().where(events.c.endpoint == name).values(account_id=account_id))
    bind.execute(events.delete().where(events.c.account_id.is_(None)))


def _create_sessions() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("principal", sa.String(length=200), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("password_tag", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_sessions")),
    )
    op.create_index(op.f("ix_admin_sessions_principal"), "admin_sessions", ["principal"])
    op.create_index(op.f("ix_admin_sessions_expires_at"), "admin_sessions", ["expires_at"])


def upgrade() -> None:
    _create_sessions()
    for table in OWNED:
        op.add_column(table, sa.Column("account_id", Id, nullable=True))
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_constraint("uq_endpoints_endpoint", type_="unique")
    with op.batch_alter_table("endpoint_events") as batch:
        batch.drop_index("ix_endpoint_events_endpoint")
    _backfill()
    for table in WITH_IDS:
        with _batch(table) as batch:
            if table not in OWNED:
                continue
            batch.alter_column("account_id", existing_type=Id, nullable=False)
            batch.create_foreign_key(
                op.f(f"fk_{table}_account_id_accounts"),
                "accounts",
                ["account_id"],
                ["id"],
                ondelete="CASCADE",
            )
            if table == "deliveries":
                batch.create_index(op.f("ix_deliveries_account_id_id"), ["account_id", "id"])
            elif table == "endpoints":
                batch.create_unique_constraint(
                    op.f("uq_endpoints_account_id_endpoint"), ["account_id", "endpoint"]
                )
            elif table == "endpoint_events":
                batch.create_index(
                    op.f("ix_endpoint_events_account_id_endpoint_created_at"),
                    ["account_id", "endpoint", "created_at"],
                )


def downgrade() -> None:
    op.drop_table("admin_sessions")
    bind = op.get_bind()
    e = endpoints.c
    keep = sa.select(sa.func.min(e.id)).group_by(e.endpoint)
    bind.execute(endpoints.delete().where(e.id.not_in(keep)))
    for table in reversed(OWNED):
        with op.batch_alter_table(table) as batch:
            if table == "deliveries":
                batch.drop_index(op.f("ix_deliveries_account_id_id"))
            elif table == "endpoints":
                batch.drop_constraint(op.f("uq_endpoints_account_id_endpoint"), type_="unique")
                batch.create_unique_constraint(op.f("uq_endpoints_endpoint"), ["endpoint"])
            elif table == "endpoint_events":
                batch.drop_index(op.f("ix_endpoint_events_account_id_endpoint_created_at"))
                batch.create_index(op.f("ix_endpoint_events_endpoint"), ["endpoint"])
            batch.drop_constraint(op.f(f"fk_{table}_account_id_accounts"), type_="foreignkey")
            batch.drop_column("account_id")
