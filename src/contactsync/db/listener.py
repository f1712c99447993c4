"""Listener tables: the durable inbox, per-handler runs, and the SQL projection of synced contacts.

The inbox and handler runs live in the listener's own database; the projection tables may live
there too (the default) or in the customer's database (SQLite, PostgreSQL or MySQL/MariaDB), which
is why they are listed separately in :data:`PROJECTION_TABLES` and keep to portable types: string
keys of bounded length, long text only outside unique keys (URLs are keyed by their SHA-256).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from contactsync.db.metadata import listener_metadata
from contactsync.db.sessions import sessions_table

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""Auto-increment surrogate keys: SQLite only auto-increments an INTEGER PRIMARY KEY."""

_BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

KEY_LENGTH = 64
"""Sender ids (contact, field, campaign …) and transactionids are short decimal strings."""
DATE_LENGTH = 40
"""Dates are kept exactly as sent: ``YYYY-MM-DD HH:MM:SS`` or ISO 8601 with an offset."""

inbox = sa.Table(
    "listener_inbox",
    listener_metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("transactionid", sa.String(KEY_LENGTH), nullable=False, unique=True),
    sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("content_type", sa.String(200), nullable=False, server_default=""),
    sa.Column("query", _TEXT, nullable=False),
    sa.Column("headers", _TEXT, nullable=False),
    sa.Column("body", _BLOB, nullable=False),
    sa.Column("source_address", sa.String(64), nullable=False, server_default=""),
    sa.Column("deduplicable", sa.Boolean(), nullable=False, server_default=sa.true()),
)
"""Every accepted request, raw, committed before its 2xx; the unique ``transactionid`` deduplicates.

``transactionid`` holds the entry's idempotency key: the delivery's transactionid, or for a GET that
carries none its ``webhook-id`` header, else a generated ``local-…`` key (``deduplicable`` false).
"""

handler_runs = sa.Table(
    "listener_handler_runs",
    listener_metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("inbox_id", _ID, sa.ForeignKey("listener_inbox.id", ondelete="CASCADE"), nullable=False),
    sa.Column("handler", sa.String(100), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at_ms", sa.BigInteger(), nullable=False),
    sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
    sa.Column("finished_at_ms", sa.BigInteger(), nullable=True),
    sa.Column("last_error", _TEXT, nullable=True),
    sa.UniqueConstraint("inbox_id", "handler"),
    sa.Index("ix_listener_handler_runs_due", "handler", "state", "next_attempt_at_ms"),
    # what is still to do (metrics, the admin page): a few rows, however long the history
    sa.Index(
        "ix_listener_handler_runs_unfinished",
        "handler",
        "state",
        "received_at_ms",
        sqlite_where=sa.text("state != 'done'"),
        postgresql_where=sa.text("state != 'done'"),
    ),
    # a handler's failures, newest first (the admin page): a page's worth, however long the backlog
    sa.Index(
        "ix_listener_handler_runs_unfinished_id",
        "handler",
        "state",
        "id",
        sqlite_where=sa.text("state != 'done'"),
        postgresql_where=sa.text("state != 'done'"),
    ),
)
"""One row per (inbox entry, handler): each handler is tracked and retried on its own."""

UNFINISHED: sa.ColumnElement[bool] = handler_runs.c.state != sa.literal_column("'done'")
"""The partial indexes' predicate, as a literal: a state bound as a parameter lets a prepared
statement's generic plan (PostgreSQL's choice after five runs on a connection) not prove it, and
then walk every finished run in id order (measured: a claim read 160,000 done rows to take 100)."""


def in_state(state: str) -> sa.ColumnElement[bool]:
    """Runs in ``state``, written as a literal (see :data:`UNFINISHED`), and so among the unfinished
    runs' partial indexes whenever ``state`` is not done."""
    if state not in ("pending", "failed", "done"):
        raise ValueError(f"unknown handler run state {state!r}")
    condition = handler_runs.c.state == sa.literal_column(f"'{state}'")
    return condition if state == "done" else sa.and_(condition, UNFINISHED)


handler_attempts = sa.Table(
    "listener_handler_attempts",
    listener_metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("run_id", _ID, sa.ForeignKey("listener_handler_runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("at_ms", sa.BigInteger(), nullable=False),
    sa.Column("ok", sa.Boolean(), nullable=False),
    sa.Column("status", sa.Integer(), nullable=True),
    sa.Column("duration_ms", sa.Integer(), nullable=False),
    sa.Column("target", _TEXT, nullable=False),
    sa.Column("detail", _TEXT, nullable=False),
    sa.Index("ix_listener_handler_attempts_run", "run_id"),
)
"""Each outbound attempt of a handler that calls out (the CRM forwarders): where to, and the answer."""


def _stamp(name: str) -> sa.Column[int]:
    """The transactionid that wrote the attribute ``name`` (NULL: no delivery has carried it yet)."""
    return sa.Column(f"{name}_transactionid", sa.BigInteger(), nullable=True)


contacts = sa.Table(
    "sync_contacts",
    listener_metadata,
    sa.Column("contact_id", sa.String(KEY_LENGTH), primary_key=True),
    sa.Column("email", sa.String(320), nullable=True),
    _stamp("email"),
    sa.Column("phone", sa.String(64), nullable=True),
    _stamp("phone"),
    sa.Column("profile_url", _TEXT, nullable=True),
    _stamp("profile_url"),
    sa.Column("lead_score", sa.String(KEY_LENGTH), nullable=True),
    _stamp("lead_score"),
    sa.Column("lead_label", sa.String(100), nullable=True),
    _stamp("lead_label"),
    sa.Column("last_transactionid", sa.BigInteger(), nullable=False),
    sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
    sa.Index("ix_sync_contacts_email", "email"),
)
"""One row per sender contact; each attribute is last-writer-wins by the transactionid beside it.

NULL means no delivery has carried the attribute yet; ``""`` that the newest one carrying it sent it
empty. ``last_transactionid`` is the newest delivery applied to the contact; ``updated_at_ms`` the
listener's clock when the row last changed (the one column that depends on arrival order).
"""

CONTACT_ATTRIBUTES = ("email", "phone", "profile_url", "lead_score", "lead_label")
"""The merged attributes of ``sync_contacts``, each with its ``<name>_transactionid``."""

field_values = sa.Table(
    "sync_field_values",
    listener_metadata,
    sa.Column("contact_id", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("field_id", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("name", sa.String(255), nullable=True),
    _stamp("name"),
    sa.Column("value", _TEXT, nullable=True),
    _stamp("value"),
    sa.PrimaryKeyConstraint("contact_id", "field_id"),
)
"""The contact's custom fields by field id; name and value each last-writer-wins, like contacts."""


def _activity(name: str, *columns: sa.Column[object], key: tuple[str, ...], doc: str) -> sa.Table:
    table = sa.Table(
        name,
        listener_metadata,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("contact_id", sa.String(KEY_LENGTH), nullable=False),
        *columns,
        sa.Column("first_transactionid", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("contact_id", *key, name=f"uq_{name}_natural_key"),
        comment=doc,
    )
    return table


campaigns_opened = _activity(
    "sync_campaigns_opened",
    sa.Column("campaign_id", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("open_date", sa.String(DATE_LENGTH), nullable=False),
    key=("campaign_id", "open_date"),
    doc="campaigns-opened, one row per (contact, campaign, open_date)",
)
links_clicked = _activity(
    "sync_links_clicked",
    sa.Column("url_sha256", sa.String(64), nullable=False),
    sa.Column("url", _TEXT, nullable=False),
    sa.Column("clicks", sa.BigInteger(), nullable=False),
    key=("url_sha256",),
    doc="links-clicked, one row per (contact, url) holding the highest click count seen",
)
pages_visited = _activity(
    "sync_pages_visited",
    sa.Column("page_sha256", sa.String(64), nullable=False),
    sa.Column("page", _TEXT, nullable=False),
    sa.Column("visit_date", sa.String(DATE_LENGTH), nullable=False),
    key=("page_sha256", "visit_date"),
    doc="pages-visited, one row per (contact, page, visit_date)",
)
automations_triggered = _activity(
    "sync_automations_triggered",
    sa.Column("automation_id", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("trigger_date", sa.String(DATE_LENGTH), nullable=False),
    key=("automation_id", "trigger_date"),
    doc="automation-triggered, one row per (contact, automation, trigger_date)",
)
goals_reached = _activity(
    "sync_goals_reached",
    sa.Column("goal_id", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("reach_date", sa.String(DATE_LENGTH), nullable=False),
    key=("goal_id", "reach_date"),
    doc="goals-reached, one row per (contact, goal, reach_date)",
)
webhooks_triggered = _activity(
    "sync_webhooks_triggered",
    sa.Column("webhook_id", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("trigger_date", sa.String(DATE_LENGTH), nullable=False),
    key=("webhook_id", "trigger_date"),
    doc="webhooks-triggered, one row per (contact, webhook, trigger_date)",
)
lead_scores = _activity(
    "sync_lead_scores",
    sa.Column("score_id", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("score", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("score_date", sa.String(DATE_LENGTH), nullable=False),
    key=("score_id", "score_date"),
    doc="lead-score, one row per (contact, score rule, score_date)",
)

PROJECTION_TABLES = (
    contacts,
    field_values,
    campaigns_opened,
    links_clicked,
    pages_visited,
    automations_triggered,
    goals_reached,
    webhooks_triggered,
    lead_scores,
)


admin_sessions = sessions_table(listener_metadata)
"""Server-side sessions of the listener's admin UI (db/sessions.py)."""

secrets = sa.Table(
    "listener_secrets",
    listener_metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("label", sa.String(100), nullable=False, unique=True),
    sa.Column("secret", sa.Text(), nullable=False),
    sa.Column("previous_secret", sa.Text(), nullable=True),
    sa.Column("previous_until_ms", sa.BigInteger(), nullable=True),
    sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
    sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
)
"""Signing secrets added in the admin UI (beside the configured ones), sealed (db/sealing.py); while
a rotation's grace period runs, the previous secret is accepted too (until ``previous_until_ms``)."""

refusals = sa.Table(
    "listener_refusals",
    listener_metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("minute_ms", sa.BigInteger(), nullable=False),
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("source_address", sa.String(64), nullable=False, server_default=""),
    sa.Column("action", sa.String(KEY_LENGTH), nullable=False, server_default=""),
    sa.Column("action_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("secret_label", sa.String(100), nullable=False, server_default=""),
    sa.Column("count", sa.Integer(), nullable=False),
    sa.Column("last_at_ms", sa.BigInteger(), nullable=False),
    sa.UniqueConstraint("minute_ms", "reason", "source_address", "action", name="uq_listener_refusals_key"),
)
"""Refused requests, one row per (minute, reason, sender, action) with a count: never the body, and
never more than a bounded number of rows a minute however many requests are refused."""
