"""manual runs may ignore re-entry (a resend on purpose)

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a plain ADD COLUMN (no table rebuild on SQLite, which would have to recreate the partial
    # one-running-run index): existing runs were ordinary ones
    op.add_column(
        "manual_runs", sa.Column("ignore_reentry", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    op.drop_column("manual_runs", "ignore_reentry")
