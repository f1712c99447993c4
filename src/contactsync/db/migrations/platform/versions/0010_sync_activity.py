"""the platform's own delivered syncs become the contact's webhook activity: an activity names the
delivery it records (once each), a delivery names the webhook activity that caused it (the loop
guard), and a cursor says how far the recording job has read the delivered deliveries

The cursor starts at the newest delivery delivered before this upgrade: older syncs are not
back-filled (they would fire ``webhook.triggered`` automations for month-old sends).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
INDEX = "uq_activities_delivery_id"
JOB = "sync_activity"
EPOCH = datetime(1970, 1, 1)


def upgrade() -> None:
    with op.batch_alter_table("activities") as batch:
        batch.add_column(sa.Column("delivery_id", Id, nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("cause_activity_id", Id, nullable=True))
    recorded = sa.text("delivery_id IS NOT NULL")
    op.create_index(
        INDEX, "activities", ["delivery_id"], unique=True, postgresql_where=recorded, sqlite_where=recorded
    )
    cursors = op.create_table(
        "job_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("last_id", Id, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_cursors")),
    )
    assert cursors is not None
    newest = (
        op.get_bind()
        .execute(  # through (state, updated_at, id): one index probe, whatever the outbox's size
            sa.text(
                "SELECT updated_at, id FROM deliveries WHERE state = 'delivered' "
                "ORDER BY updated_at DESC, id DESC LIMIT 1"
            )
        )
        .first()
    )
    at, last_id = (EPOCH, 0) if newest is None else (newest[0], newest[1])
    if isinstance(at, str):  # SQLite hands back text from a raw query
        at = datetime.fromisoformat(at)
    op.bulk_insert(cursors, [{"name": JOB, "at": at, "last_id": last_id}])


def downgrade() -> None:
    op.drop_table("job_cursors")
    op.drop_index(INDEX, table_name="activities")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("cause_activity_id")
    with op.batch_alter_table("activities") as batch:
        batch.drop_column("delivery_id")
