"""signing secrets managed in the admin UI (sealed), and the refused requests, aggregated per minute

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

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "listener_secrets",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_until_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_listener_secrets")),
        sa.UniqueConstraint("label", name=op.f("uq_listener_secrets_label")),
    )
    op.create_table(
        "listener_refusals",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("minute_ms", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("source_address", sa.String(length=64), server_default="", nullable=False),
        sa.Column("action", sa.String(length=64), server_default="", nullable=False),
        sa.Column("action_name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("secret_label", sa.String(length=100), server_default="", nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_listener_refusals")),
        sa.UniqueConstraint(
            "minute_ms", "reason", "source_address", "action", name="uq_listener_refusals_key"
        ),
    )


def downgrade() -> None:
    op.drop_table("listener_refusals")
    op.drop_table("listener_secrets")
