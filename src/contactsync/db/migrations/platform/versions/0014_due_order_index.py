"""deliveries by state, due time and id: the claim's whole order, so a claim reads its batch, not the backlog

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_state_next_attempt_at_id", "deliveries", ["state", "next_attempt_at", "id"]
    )
    op.drop_index("ix_deliveries_state_next_attempt_at", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_state_next_attempt_at", "deliveries", ["state", "next_attempt_at"])
    op.drop_index("ix_deliveries_state_next_attempt_at_id", table_name="deliveries")
