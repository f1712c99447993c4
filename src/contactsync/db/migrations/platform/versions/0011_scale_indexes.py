"""indexes found by bench/scale.py: deliveries by action, newest first (a rarely used action's
deliveries are found directly, not by walking the account's in the hope of meeting them), and
contacts by exact phone in email order (a phone search reads its matches, not the whole list in
email order looking for them)

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_deliveries_action_id_id", "deliveries", ["action_id", "id"]),
    ("ix_contacts_list_id_phone_email_key", "contacts", ["list_id", "phone", "email_key"]),
)
REPLACED = (("ix_contacts_list_id_phone", "contacts", ["list_id", "phone"]),)
"""Prefixes of the new indexes: they serve every query these served."""


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    for name, table, _columns in REPLACED:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for name, table, columns in REPLACED:
        op.create_index(name, table, columns)
    for name, table, _columns in INDEXES:
        op.drop_index(name, table_name=table)
