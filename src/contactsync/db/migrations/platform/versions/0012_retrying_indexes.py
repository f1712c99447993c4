"""deliveries retrying (pending after a failed attempt) by account, automation, action and endpoint, and an
automation's deliveries by state and time: the health the dashboard and the automations show

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RETRYING = sa.text("state = 'pending' AND attempt_count > 0")
PARTIAL = (
    ("ix_deliveries_retrying_account", ["account_id", "id"]),
    ("ix_deliveries_retrying_automation", ["automation_id", "id"]),
    ("ix_deliveries_retrying_action", ["action_id", "id"]),
    ("ix_deliveries_retrying_endpoint", ["account_id", "endpoint", "id"]),
)
BY_STATE = ("ix_deliveries_automation_id_state_updated_at", ["automation_id", "state", "updated_at"])


def upgrade() -> None:
    for name, columns in PARTIAL:
        op.create_index(name, "deliveries", columns, sqlite_where=RETRYING, postgresql_where=RETRYING)
    op.create_index(BY_STATE[0], "deliveries", BY_STATE[1])


def downgrade() -> None:
    for name, _columns in (*PARTIAL, BY_STATE):
        op.drop_index(name, table_name="deliveries")
