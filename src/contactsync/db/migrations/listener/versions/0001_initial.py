"""listener schema: inbox, handler runs, projection

Revision ID: 0001
Revises:
Create Date: 2026-11-27 09:10:55.981278
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "listener_inbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("transactionid", sa.String(length=64), nullable=False),
        sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("content_type", sa.String(length=200), server_default="", nullable=False),
        sa.Column(
            "query",
            sa.Text().with_variant(mysql.MEDIUMTEXT(), "mariadb").with_variant(mysql.MEDIUMTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "headers",
            sa.Text().with_variant(mysql.MEDIUMTEXT(), "mariadb").with_variant(mysql.MEDIUMTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "body",
            sa.LargeBinary()
            .with_variant(mysql.LONGBLOB(), "mariadb")
            .with_variant(mysql.LONGBLOB(), "mysql"),
            nullable=False,
        ),
        sa.Column("source_address", sa.String(length=64), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_listener_inbox")),
        sa.UniqueConstraint("transactionid", name=op.f("uq_listener_inbox_transactionid")),
    )
    op.create_table(
        "sync_automations_triggered",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("automation_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("trigger_date", sa.String(length=40), nullable=False),
        sa.Column("first_transactionid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_automations_triggered")),
        sa.UniqueConstraint(
            "contact_id", "automation_id", "trigger_date", name="uq_sync_automations_triggered_natural_key"
        ),
        comment="automation-triggered, one row per (contact, automation, trigger_date)",
    )
    op.create_table(
        "sync_campaigns_opened",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("open_date", sa.String(length=40), nullable=False),
        sa.Column("first_transactionid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_campaigns_opened")),
        sa.UniqueConstraint(
            "contact_id", "campaign_id", "open_date", name="uq_sync_campaigns_opened_natural_key"
        ),
        comment="campaigns-opened, one row per (contact, campaign, open_date)",
    )
    op.create_table(
        "sync_contacts",
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), server_default="", nullable=False),
        sa.Column("phone", sa.String(length=64), server_default="", nullable=False),
        sa.Column(
            "profile_url",
            sa.Text().with_variant(mysql.MEDIUMTEXT(), "mariadb").with_variant(mysql.MEDIUMTEXT(), "mysql"),
            nullable=True,
        ),
        sa.Column("lead_score", sa.String(length=64), nullable=True),
        sa.Column("lead_label", sa.String(length=100), nullable=True),
        sa.Column("last_transactionid", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_sync_contacts")),
    )
    with op.batch_alter_table("sync_contacts", schema=None) as batch_op:
        batch_op.create_index("ix_sync_contacts_email", ["email"], unique=False)

    op.create_table(
        "sync_field_values",
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("field_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column(
            "value",
            sa.Text().with_variant(mysql.MEDIUMTEXT(), "mariadb").with_variant(mysql.MEDIUMTEXT(), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("contact_id", "field_id", name=op.f("pk_sync_field_values")),
    )
    op.create_table(
        "sync_goals_reached",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("goal_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("reach_date", sa.String(length=40), nullable=False),
        sa.Column("first_transactionid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_goals_reached")),
        sa.UniqueConstraint("contact_id", "goal_id", "reach_date", name="uq_sync_goals_reached_natural_key"),
        comment="goals-reached, one row per (contact, goal, reach_date)",
    )
    op.create_table(
        "sync_lead_scores",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("score_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("score", sa.String(length=64), nullable=False),
        sa.Column("score_date", sa.String(length=40), nullable=False),
        sa.Column("first_transactionid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_lead_scores")),
        sa.UniqueConstraint("contact_id", "score_id", "score_date", name="uq_sync_lead_scores_natural_key"),
        comment="lead-score, one row per (contact, score rule, score_date)",
    )
    op.create_table(
        "sync_links_clicked",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("url_sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "url",
            sa.Text().with_variant(mysql.MEDIUMTEXT(), "mariadb").with_variant(mysql.MEDIUMTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("first_transactionid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_links_clicked")),
        sa.UniqueConstraint("contact_id", "url_sha256", name="uq_sync_links_clicked_natural_key"),
        comment="links-clicked, one row per (contact, url) holding the highest click count seen",
    )
    op.create_table(
        "sync_pages_visited",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("page_sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "page",
            sa.Text().with_variant(mysql.MEDIUMTEXT(), "mariadb").with_variant(mysql.MEDIUMTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column("visit_date", sa.String(length=40), nullable=False),
        sa.Column("first_transactionid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_pages_visited")),
        sa.UniqueConstraint(
            "contact_id", "page_sha256", "visit_date", name="uq_sync_pages_visited_natural_key"
        ),
        comment="pages-visited, one row per (contact, page, visit_date)",
    )
    op.create_table(
        "sync_webhooks_triggered",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("contact_id", sa.String(length=64), nullable=False),
        sa.Column("webhook_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("trigger_date", sa.String(length=40), nullable=False),
        sa.Column("first_transactionid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_webhooks_triggered")),
        sa.UniqueConstraint(
            "contact_id", "webhook_id", "trigger_date", name="uq_sync_webhooks_triggered_natural_key"
        ),
        comment="webhooks-triggered, one row per (contact, webhook, trigger_date)",
    )
    op.create_table(
        "listener_handler_runs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("inbox_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("handler", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("finished_at_ms", sa.BigInteger(), nullable=True),
        sa.Column(
            "last_error",
            sa.Text().with_variant(mysql.MEDIUMTEXT(), "mariadb").with_variant(mysql.MEDIUMTEXT(), "mysql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["listener_inbox.id"],
            name=op.f("fk_listener_handler_runs_inbox_id_listener_inbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_listener_handler_runs")),
        sa.UniqueConstraint("inbox_id", "handler", name=op.f("uq_listener_handler_runs_inbox_id_handler")),
    )
    with op.batch_alter_table("listener_handler_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_listener_handler_runs_due", ["handler", "state", "next_attempt_at_ms"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("listener_handler_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_listener_handler_runs_due")

    op.drop_table("listener_handler_runs")
    op.drop_table("sync_webhooks_triggered")
    op.drop_table("sync_pages_visited")
    op.drop_table("sync_links_clicked")
    op.drop_table("sync_lead_scores")
    op.drop_table("sync_goals_reached")
    op.drop_table("sync_field_values")
    with op.batch_alter_table("sync_contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_contacts_email")

    op.drop_table("sync_contacts")
    op.drop_table("sync_campaigns_opened")
    op.drop_table("sync_automations_triggered")
    op.drop_table("listener_inbox")
