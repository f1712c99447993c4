"""admin sessions name an account (the shape both sides' session tables share)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "admin_sessions", sa.Column("account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"))
    )


def downgrade() -> None:
    op.drop_column("admin_sessions", "account_id")
