"""indexes for the daily views (a contact's, an automation's, a state's deliveries; recent attempts)
and for retention (finished deliveries by when they finished)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_deliveries_contact_id_id", "deliveries", ["contact_id", "id"]),
    ("ix_deliveries_automation_id_id", "deliveries", ["automation_id", "id"]),
    ("ix_deliveries_state_id", "deliveries", ["state", "id"]),
    ("ix_deliveries_state_updated_at_id", "deliveries", ["state", "updated_at", "id"]),
    ("ix_delivery_attempts_started_at", "delivery_attempts", ["started_at"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in INDEXES:
        op.drop_index(name, table_name=table)
