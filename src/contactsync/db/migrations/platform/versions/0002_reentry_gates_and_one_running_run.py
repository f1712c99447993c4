"""platform schema: re-entry gates, and at most one running manual run per automation

The gate row of an (automation, contact) pair is what every entry upserts, so the database decides
re-entry on committed data; it is filled from the entries recorded so far. Runs that already overlap
(started concurrently before this revision) are cancelled except the oldest of each automation, so
the partial unique index can be built; what they enqueued stays queued.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reentry_gates",
        sa.Column("automation_id", _ID, nullable=False),
        sa.Column("contact_id", _ID, nullable=False),
        sa.Column("last_entered_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["automation_id"],
            ["automations.id"],
            name=op.f("fk_reentry_gates_automation_id_automations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_reentry_gates_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("automation_id", "contact_id", name=op.f("pk_reentry_gates")),
    )
    with op.batch_alter_table("reentry_gates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reentry_gates_contact_id"), ["contact_id"], unique=False)
    op.execute(
        "INSERT INTO reentry_gates (automation_id, contact_id, last_entered_at)"
        " SELECT automation_id, contact_id, MAX(entered_at) FROM automation_entries"
        " GROUP BY automation_id, contact_id"
    )

    now = datetime.now(UTC).replace(tzinfo=None)
    op.get_bind().execute(
        sa.text(
            "UPDATE manual_runs SET state = 'cancelled', updated_at = :now, finished_at = :now"
            " WHERE state = 'running' AND id > (SELECT MIN(r.id) FROM manual_runs r"
            " WHERE r.automation_id = manual_runs.automation_id AND r.state = 'running')"
        ),
        {"now": now},
    )
    running = sa.text("state = 'running'")
    with op.batch_alter_table("manual_runs", schema=None) as batch_op:
        batch_op.create_index(
            "uq_manual_runs_one_running",
            ["automation_id"],
            unique=True,
            postgresql_where=running,
            sqlite_where=running,
        )


def downgrade() -> None:
    with op.batch_alter_table("manual_runs", schema=None) as batch_op:
        batch_op.drop_index("uq_manual_runs_one_running")
    with op.batch_alter_table("reentry_gates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reentry_gates_contact_id"))
    op.drop_table("reentry_gates")
