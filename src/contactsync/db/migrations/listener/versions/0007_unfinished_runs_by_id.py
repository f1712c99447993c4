"""the handler runs still to do, by id: the admin page lists a handler's failures newest first from
this partial index, a page's worth, however long a failing handler's backlog has grown

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = sa.text("state != 'done'")


def upgrade() -> None:
    op.create_index(
        "ix_listener_handler_runs_unfinished_id",
        "listener_handler_runs",
        ["handler", "state", "id"],
        sqlite_where=UNFINISHED,
        postgresql_where=UNFINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_listener_handler_runs_unfinished_id", table_name="listener_handler_runs")
