"""a partial index on the handler runs still to do (metrics and the admin page read only those)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("state != 'done'")


def upgrade() -> None:
    op.create_index(
        "ix_listener_handler_runs_unfinished",
        "listener_handler_runs",
        ["handler", "state", "received_at_ms"],
        sqlite_where=UNFINISHED,
        postgresql_where=UNFINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_listener_handler_runs_unfinished", table_name="listener_handler_runs")
