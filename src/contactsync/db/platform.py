"""Tables of the sending platform: contacts and their marketing data, automations, the outbox.

SQLAlchemy Core only. Every timestamp is a naive UTC ``DateTime()`` produced by an injected clock
(never a server default), so tests and both databases agree to the microsecond. Ids are 64-bit on
PostgreSQL and SQLite's ``INTEGER PRIMARY KEY AUTOINCREMENT`` on SQLite: an id is never handed out
twice, so a reference kept after a delete can never point at someone else's new row.

Ownership (spec/accounts.md): the outbox, attempts, endpoints, their events, entries and manual runs
carry ``account_id`` themselves; lists do too, and what hangs off a list (fields, contacts, activity,
automations, actions) is deleted with it by a ``CASCADE`` chain, so no row outlives its owner.
"""

from __future__ import annotations

import sqlalchemy as sa

from contactsync.db.metadata import platform_metadata as md
from contactsync.db.sessions import sessions_table

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""Primary/foreign key type: BIGINT, but a rowid alias on SQLite so it autoincrements."""


def _pk() -> sa.Column[int]:
    return sa.Column("id", Id, primary_key=True, autoincrement=True)


def _fk(
    name: str, target: str, *, nullable: bool = False, ondelete: str | None = "CASCADE"
) -> sa.Column[int]:
    return sa.Column(name, Id, sa.ForeignKey(target, ondelete=ondelete), nullable=nullable)


def _owner() -> sa.Column[int]:
    """The owning account, on the row itself (deleting the account deletes the row)."""
    return _fk("account_id", "accounts.id")


accounts = sa.Table(
    "accounts",
    md,
    _pk(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("suspended_at", sa.DateTime()),
    # set while the operator has suspended the account: its keys and members are refused and its
    # deliveries wait (the claim skips them) until it is reactivated
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

users = sa.Table(
    "users",
    md,
    _pk(),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    # lower-cased: one person, one row, however they type it
    sa.Column("password_hash", sa.Text(), nullable=False),
    sa.Column("operator", sa.Boolean(), nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("disabled_at", sa.DateTime()),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

memberships = sa.Table(
    "memberships",
    md,
    _pk(),
    _owner(),
    _fk("user_id", "users.id"),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.UniqueConstraint("account_id", "user_id"),
    sa.Index(None, "user_id"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

audit_log = sa.Table(
    "audit_log",
    md,
    _pk(),
    sa.Column("at", sa.DateTime(), nullable=False),
    sa.Column("account_id", Id),
    # the account the change was made in (none for installation-wide changes such as a new user);
    # no foreign key, so the record outlives what it names
    sa.Column("actor_kind", sa.String(16), nullable=False),
    sa.Column("actor_id", Id),
    sa.Column("actor_label", sa.String(320), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target_type", sa.String(32), nullable=False),
    sa.Column("target_id", sa.String(64)),
    sa.Column("detail", sa.JSON(), nullable=False, default=dict),
    sa.Index(None, "account_id", "id"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

lead_status_thresholds = sa.Table(
    "lead_status_thresholds",
    md,
    _pk(),
    _fk("account_id", "accounts.id"),
    sa.Column("min_score", sa.Integer(), nullable=False),
    sa.Column("label", sa.String(100), nullable=False),
    sa.UniqueConstraint("account_id", "min_score"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

api_keys = sa.Table(
    "api_keys",
    md,
    _pk(),
    _fk("account_id", "accounts.id", nullable=True),
    # none for an operator key (installation-wide: accounts and users, no account's data)
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(32), nullable=False, unique=True),
    sa.Column("key_hash", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("last_used_at", sa.DateTime()),
    sa.Column("revoked_at", sa.DateTime()),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

lists = sa.Table(
    "lists",
    md,
    _pk(),
    _fk("account_id", "accounts.id"),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Index(None, "account_id"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

fields = sa.Table(
    "fields",
    md,
    _pk(),
    _fk("list_id", "lists.id"),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("shortcode_key", sa.String(200), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("choices", sa.JSON(), nullable=False, default=list),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.UniqueConstraint("list_id", "shortcode_key"),
    sa.CheckConstraint("type IN ('text','number','date','email','phone','choice')", name="type"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

contacts = sa.Table(
    "contacts",
    md,
    _pk(),
    _fk("list_id", "lists.id"),
    sa.Column("email", sa.String(320), nullable=False),
    # lower-cased email: the unique key that makes "unique in the list, case-insensitive" a DB rule
    sa.Column("email_key", sa.String(320), nullable=False),
    sa.Column("phone", sa.String(64), nullable=False, default=""),
    sa.Column("status", sa.String(32), nullable=False, default="subscribed"),
    # running total of lead_score activity rows, kept in the same transaction as each entry
    sa.Column("lead_score", sa.Integer(), nullable=False, default=0),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.UniqueConstraint("list_id", "email_key"),
    # manual runs walk a list in id order, chunk by chunk
    sa.Index(None, "list_id", "id"),
    # the admin UI's search by exact phone (db/search.py), its matches read in email order
    sa.Index(None, "list_id", "phone", "email_key"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

CONTACT_SEARCH_INDEX = "ix_contacts_list_id_email_key_c"
POSTGRESQL_ONLY_INDEXES = frozenset({CONTACT_SEARCH_INDEX})
sa.Index(CONTACT_SEARCH_INDEX, contacts.c.list_id, contacts.c.email_key).ddl_if(dialect="postgresql")
"""Search by email prefix compares code points (db/search.py); a PostgreSQL database's collation may
not, so migration 0008 builds this index with ``email_key COLLATE "C"`` (PostgreSQL reflects it as the
plain column it is, in another collation). SQLite's unique (list_id, email_key) already serves it."""

field_values = sa.Table(
    "field_values",
    md,
    _fk("contact_id", "contacts.id"),
    _fk("field_id", "fields.id"),
    # canonical text (dates as YYYY-MM-DD[ HH:MM:SS], so text order is time order)
    sa.Column("value", sa.Text(), nullable=False),
    # numeric copy for number fields: gt/lt compare numbers, not strings
    sa.Column("value_num", sa.Float()),
    sa.PrimaryKeyConstraint("contact_id", "field_id"),
    sa.Index(None, "field_id", "value_num"),
)

ACTIVITY_KINDS = ("campaign_open", "link_click", "page_visit", "automation", "goal", "webhook", "lead_score")

activities = sa.Table(
    "activities",
    md,
    _pk(),
    _fk("contact_id", "contacts.id"),
    sa.Column("kind", sa.String(16), nullable=False),
    # campaign / automation / goal / webhook / score id, by kind
    sa.Column("ref_id", sa.BigInteger()),
    sa.Column("name", sa.Text(), nullable=False, default=""),
    # clicked url or visited page
    sa.Column("url", sa.Text(), nullable=False, default=""),
    # lead-score value
    sa.Column("value", sa.Integer()),
    sa.Column("occurred_at", sa.DateTime(), nullable=False),
    # webhook activity the platform recorded from one of its own deliveries (automation/sync_activity.py);
    # no foreign key: the activity outlives the delivery retention deletes
    sa.Column("delivery_id", Id),
    sa.CheckConstraint("kind IN " + repr(ACTIVITY_KINDS), name="kind"),
    sa.Index(None, "contact_id", "kind", "occurred_at"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

RECORDED_DELIVERY_INDEX = "uq_activities_delivery_id"
_recorded = sa.text("delivery_id IS NOT NULL")
sa.Index(
    RECORDED_DELIVERY_INDEX,
    activities.c.delivery_id,
    unique=True,
    # a delivery is recorded as activity once, whichever process records it; partial, so the index
    # holds only the platform's own webhook rows, not every click and visit
    postgresql_where=_recorded,
    sqlite_where=_recorded,
)

automations = sa.Table(
    "automations",
    md,
    _pk(),
    _fk("list_id", "lists.id"),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    # contact.updated only: fire only when one of these field ids changed (empty: any change)
    sa.Column("trigger_fields", sa.JSON(), nullable=False, default=list),
    # trigger-specific filter, e.g. {"campaign_id": 7} for campaign.opened
    sa.Column("trigger_filter", sa.JSON(), nullable=False, default=dict),
    sa.Column("conditions", sa.JSON(), nullable=False),
    sa.Column("reentry", sa.String(16), nullable=False, default="once"),
    sa.Column("reentry_hours", sa.Integer()),
    sa.Column("status", sa.String(16), nullable=False, default="active"),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.CheckConstraint("reentry IN ('once','always','per_hours')", name="reentry"),
    sa.CheckConstraint("status IN ('active','paused')", name="status"),
    sa.Index(None, "list_id", "trigger", "status"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

actions = sa.Table(
    "actions",
    md,
    _pk(),
    _fk("automation_id", "automations.id"),
    sa.Column("kind", sa.String(32), nullable=False, default="sync_contact"),
    sa.Column("settings", sa.JSON(), nullable=False),
    # HMAC keys as used for signing ("whsec_…"); the previous one stays valid until its expiry
    sa.Column("secret", sa.Text(), nullable=False),
    sa.Column("previous_secret", sa.Text()),
    sa.Column("previous_secret_expires_at", sa.DateTime()),
    sa.Column("endpoint", sa.String(300), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.Index(None, "automation_id"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

automation_entries = sa.Table(
    "automation_entries",
    md,
    _pk(),
    _owner(),
    _fk("automation_id", "automations.id"),
    _fk("contact_id", "contacts.id"),
    sa.Column("entered_at", sa.DateTime(), nullable=False),
    # 0 for `once` automations, NULL otherwise: the unique key below then allows a contact into a
    # `once` automation a single time, whatever code path tries (NULLs are distinct in both databases)
    sa.Column("once_key", sa.SmallInteger()),
    sa.Column("manual_run_id", Id),
    sa.UniqueConstraint("automation_id", "contact_id", "once_key"),
    sa.Index(None, "contact_id", "automation_id", "entered_at"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

reentry_gates = sa.Table(
    "reentry_gates",
    md,
    # one row per (automation, contact) that ever entered: the row every entry upserts, so the
    # database serialises concurrent entries of one contact and decides re-entry on committed data
    _fk("automation_id", "automations.id"),
    _fk("contact_id", "contacts.id"),
    sa.Column("last_entered_at", sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint("automation_id", "contact_id"),
    sa.Index(None, "contact_id"),
)

manual_runs = sa.Table(
    "manual_runs",
    md,
    _pk(),
    _owner(),
    _fk("automation_id", "automations.id"),
    sa.Column("state", sa.String(16), nullable=False, default="running"),
    # last contact id whose chunk is committed; a resumed run continues after it
    sa.Column("cursor_contact_id", Id, nullable=False, default=0),
    sa.Column("total", sa.Integer(), nullable=False, default=0),
    sa.Column("scanned", sa.Integer(), nullable=False, default=0),
    sa.Column("matched", sa.Integer(), nullable=False, default=0),
    sa.Column("enqueued", sa.Integer(), nullable=False, default=0),
    sa.Column("started_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.Column("finished_at", sa.DateTime()),
    # a resend on purpose: every contact that matches enters, whatever the re-entry policy says
    sa.Column("ignore_reentry", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.CheckConstraint("state IN ('running','completed','cancelled')", name="state"),
    sa.Index(None, "automation_id", "state"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

RUNNING_RUN_INDEX = "uq_manual_runs_one_running"
_running = sa.text("state = 'running'")
sa.Index(
    RUNNING_RUN_INDEX,
    manual_runs.c.automation_id,
    unique=True,
    # at most one running run per automation, whatever races to start one
    postgresql_where=_running,
    sqlite_where=_running,
)

DELIVERY_STATES = ("pending", "in_flight", "delivered", "failed", "cancelled")

deliveries = sa.Table(
    "deliveries",
    md,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("transactionid", sa.BigInteger(), nullable=False, unique=True),
    _owner(),
    _fk("action_id", "actions.id", nullable=True, ondelete="SET NULL"),
    sa.Column("automation_id", Id),
    sa.Column("contact_id", Id),
    sa.Column("endpoint", sa.String(300), nullable=False, index=True),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("headers", sa.JSON(), nullable=False),
    sa.Column("body", sa.LargeBinary(), nullable=False),
    sa.Column("content_type", sa.String(100), nullable=False, default=""),
    sa.Column("state", sa.String(16), nullable=False, default="pending"),
    sa.Column("attempt_count", sa.Integer(), nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
    sa.Column("lease_owner", sa.String(100)),
    sa.Column("lease_expires_at", sa.DateTime()),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.Column("delivered_at", sa.DateTime()),
    sa.Column("last_status", sa.Integer()),
    sa.Column("last_error", sa.Text()),
    sa.Column("ordering_key", sa.String(100)),
    # TRUE while the URL and body wait to be rendered from the contact's data when the delay ends
    # (automation/send_time.py), NULL otherwise: the claim never takes such a row
    sa.Column("render_pending", sa.Boolean()),
    sa.Column("render_note", sa.Text()),
    # what rendering at send time did, or why the request frozen at the trigger was kept
    # the webhook activity (recorded from another delivery) whose automation run queued this one: such
    # a delivery is recorded as activity too, but fires nothing (one hop; automation/sync_activity.py)
    sa.Column("cause_activity_id", Id),
    sa.CheckConstraint("state IN " + repr(DELIVERY_STATES), name="state"),
    # the claim's order, whole: a claim reads its batch off the index instead of sorting every due row
    sa.Index(None, "state", "next_attempt_at", "id"),
    sa.Index(None, "action_id", "state", "created_at"),
    sa.Index(None, "ordering_key", "transactionid"),
    sa.Index(None, "account_id", "id"),
    # an account's deliveries in one state, to one endpoint: the dashboard's capped counts
    sa.Index(None, "account_id", "state", "endpoint", "id"),
    # the daily views: a contact's, an automation's or an action's deliveries, a state's, newest first
    sa.Index(None, "contact_id", "id"),
    sa.Index(None, "automation_id", "id"),
    sa.Index(None, "action_id", "id"),
    sa.Index(None, "state", "id"),
    # retention: finished deliveries by when they finished (db/retention.py)
    sa.Index(None, "state", "updated_at", "id"),
    # the send-time render job: the rows still to render, by when they are due (a partial index)
    sa.Index(
        "ix_deliveries_render_pending",
        "next_attempt_at",
        "id",
        sqlite_where=sa.text("render_pending IS NOT NULL"),
        postgresql_where=sa.text("render_pending IS NOT NULL"),
    ),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

_RETRYING = "state = 'pending' AND attempt_count > 0"
RETRYING: sa.ColumnElement[bool] = sa.and_(
    deliveries.c.state == sa.literal_column("'pending'"), deliveries.c.attempt_count > sa.literal_column("0")
)
"""A delivery whose every attempt so far failed and which waits for the next (delivery/trouble.py);
with literals, not parameters, as in the partial indexes' predicate: both databases then see that a
query saying it reads those indexes."""
for _name, *_columns in (
    ("ix_deliveries_retrying_account", "account_id", "id"),
    ("ix_deliveries_retrying_automation", "automation_id", "id"),
    ("ix_deliveries_retrying_action", "action_id", "id"),
    ("ix_deliveries_retrying_endpoint", "account_id", "endpoint", "id"),
):
    # partial: they hold the retrying deliveries only, however long the history
    sa.Index(
        _name,
        *(deliveries.c[c] for c in _columns),
        postgresql_where=sa.text(_RETRYING),
        sqlite_where=sa.text(_RETRYING),
    )
sa.Index(
    "ix_deliveries_automation_id_state_updated_at",
    deliveries.c.automation_id,
    deliveries.c.state,
    deliveries.c.updated_at,
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    md,
    _pk(),
    _fk("delivery_id", "deliveries.id"),
    _owner(),
    sa.Column("number", sa.Integer(), nullable=False),
    sa.Column("started_at", sa.DateTime(), nullable=False),
    sa.Column("duration_ms", sa.Float(), nullable=False, default=0.0),
    sa.Column("status_code", sa.Integer()),
    sa.Column("response_headers", sa.JSON(), nullable=False, default=dict),
    sa.Column("response_body", sa.LargeBinary(), nullable=False, default=b""),
    sa.Column("error", sa.Text()),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.UniqueConstraint("delivery_id", "number"),
    sa.Index(None, "started_at"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

endpoints = sa.Table(
    "endpoints",
    md,
    _pk(),
    _owner(),
    sa.Column("endpoint", sa.String(300), nullable=False),
    sa.Column("disabled_at", sa.DateTime()),
    sa.Column("disabled_reason", sa.Text()),
    sa.Column("failing_since", sa.DateTime()),
    sa.Column("last_success_at", sa.DateTime()),
    sa.Column("last_failure_at", sa.DateTime()),
    sa.Column("edited_at", sa.DateTime()),
    sa.Column("max_in_flight", sa.Integer(), nullable=False, default=10),
    sa.Column("rate_limit_per_s", sa.Float()),
    # health is per account: one account's 410 or failures never hold another's deliveries
    sa.UniqueConstraint("account_id", "endpoint"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

endpoint_slots = sa.Table(
    "endpoint_slots",
    md,
    # PostgreSQL only (db/shared_limits.py): one row per in-flight slot of an endpoint taken by a
    # dispatcher process, numbered below the endpoint's max_in_flight; a lease that expires, so a
    # process that dies strands no slot. Rows of expired leases are taken over, released rows deleted.
    _owner(),
    sa.Column("endpoint", sa.String(300), nullable=False),
    sa.Column("slot", sa.Integer(), nullable=False),
    sa.Column("holder", sa.String(120), nullable=False),
    sa.Column("expires_at", sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint("account_id", "endpoint", "slot"),
)

endpoint_buckets = sa.Table(
    "endpoint_buckets",
    md,
    # PostgreSQL only (db/shared_limits.py): the token bucket of a rate-limited endpoint, shared by
    # every dispatcher process; ``granted`` is what the last update handed out (its RETURNING).
    _owner(),
    sa.Column("endpoint", sa.String(300), nullable=False),
    sa.Column("tokens", sa.Float(), nullable=False),
    sa.Column("granted", sa.Integer(), nullable=False),
    sa.Column("stamp", sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint("account_id", "endpoint"),
)

endpoint_events = sa.Table(
    "endpoint_events",
    md,
    _pk(),
    _owner(),
    sa.Column("endpoint", sa.String(300), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Index(None, "account_id", "endpoint", "created_at"),
    sqlite_autoincrement=True,  # ids never reused (PostgreSQL's sequences never go back anyway)
)

job_cursors = sa.Table(
    "job_cursors",
    md,
    # how far a background job has read a table, moved in the transaction that does the job's work:
    # one row per job, locked by the pass that holds it (automation/sync_activity.py)
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("at", sa.DateTime(), nullable=False),
    sa.Column("last_id", Id, nullable=False),
)

dispatchers = sa.Table(
    "dispatchers",
    md,
    # one row per running dispatcher process, refreshed every few seconds: "is anything sending?"
    sa.Column("owner", sa.String(100), primary_key=True),
    sa.Column("started_at", sa.DateTime(), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(), nullable=False),
)

admin_sessions = sessions_table(md)
"""Server-side sessions of the platform's admin UI (db/sessions.py)."""
