"""deliveries rendered when their delay ends: a mark on rows whose URL and body still wait to be
rendered from the contact's data, a note of what that rendering did, and a partial index of the
marked rows by due time for the render job

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_deliveries_render_pending"
MARKED = "render_pending IS NOT NULL"


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("render_pending", sa.Boolean(), nullable=True))
    op.add_column("deliveries", sa.Column("render_note", sa.Text(), nullable=True))
    op.create_index(
        INDEX,
        "deliveries",
        ["next_attempt_at", "id"],
        sqlite_where=sa.text(MARKED),
        postgresql_where=sa.text(MARKED),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("render_note")
        batch.drop_column("render_pending")
