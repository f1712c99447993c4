"""contact search (an email by its beginning, a phone exactly), and an account's deliveries by state
and endpoint (the dashboard's counts), both read through an index by the admin UI

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_INDEX = "ix_contacts_list_id_email_key_c"
INDEXES = (
    ("ix_contacts_list_id_phone", "contacts", ["list_id", "phone"]),
    ("ix_deliveries_account_id_state_endpoint_id", "deliveries", ["account_id", "state", "endpoint", "id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    if op.get_bind().dialect.name == "postgresql":
        # prefixes compare code points (db/search.py), whatever the database's collation; SQLite
        # compares text that way already, and its unique (list_id, email_key) serves them
        op.create_index(SEARCH_INDEX, "contacts", ["list_id", sa.text('(email_key COLLATE "C")')])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(SEARCH_INDEX, table_name="contacts")
    for name, table, _columns in INDEXES:
        op.drop_index(name, table_name=table)
