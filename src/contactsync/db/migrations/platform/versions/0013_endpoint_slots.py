"""per-endpoint in-flight slots and rate buckets shared by every dispatcher process (PostgreSQL)

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "endpoint_slots",
        sa.Column("account_id", ID, nullable=False),
        sa.Column("endpoint", sa.String(length=300), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=120), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_endpoint_slots_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "endpoint", "slot", name=op.f("pk_endpoint_slots")),
    )
    op.create_table(
        "endpoint_buckets",
        sa.Column("account_id", ID, nullable=False),
        sa.Column("endpoint", sa.String(length=300), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("stamp", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_endpoint_buckets_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "endpoint", name=op.f("pk_endpoint_buckets")),
    )


def downgrade() -> None:
    op.drop_table("endpoint_buckets")
    op.drop_table("endpoint_slots")
