"""listener schema: projection as a merge, GET entries without a transactionid, handler attempts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 15:00:00

Each contact attribute and each custom field's name and value gets the transactionid that wrote it
(back-filled with the contact's last applied transactionid, which wrote every one of them under the
old whole-payload rule); attributes never carried become NULL-able; the arrival-order ``version``
counter goes. The inbox marks entries whose key was generated (not deduplicable), and outbound
handler attempts get a table of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mariadb").with_variant(mysql.MEDIUMTEXT(), "mysql")
_ATTRIBUTES = ("email", "phone", "profile_url", "lead_score", "lead_label")


def upgrade() -> None:
    with op.batch_alter_table("listener_inbox") as batch:
        batch.add_column(sa.Column("deduplicable", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.create_table(
        "listener_handler_attempts",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("run_id", _ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("target", _TEXT, nullable=False),
        sa.Column("detail", _TEXT, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["listener_handler_runs.id"],
            name=op.f("fk_listener_handler_attempts_run_id_listener_handler_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_listener_handler_attempts")),
    )
    op.create_index("ix_listener_handler_attempts_run", "listener_handler_attempts", ["run_id"])

    with op.batch_alter_table("sync_contacts") as batch:
        for name in _ATTRIBUTES:
            batch.add_column(sa.Column(f"{name}_transactionid", sa.BigInteger(), nullable=True))
        batch.alter_column("email", existing_type=sa.String(320), nullable=True, server_default=None)
        batch.alter_column("phone", existing_type=sa.String(64), nullable=True, server_default=None)
    stamps = ", ".join(
        f"{name}_transactionid = CASE WHEN {name} IS NULL THEN NULL ELSE last_transactionid END"
        for name in _ATTRIBUTES
    )
    op.execute(f"UPDATE sync_contacts SET {stamps}")
    with op.batch_alter_table("sync_contacts") as batch:
        batch.drop_column("version")

    with op.batch_alter_table("sync_field_values") as batch:
        batch.add_column(sa.Column("name_transactionid", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("value_transactionid", sa.BigInteger(), nullable=True))
        batch.alter_column("name", existing_type=sa.String(255), nullable=True)
        batch.alter_column("value", existing_type=_TEXT, nullable=True)
    last = (
        "(SELECT c.last_transactionid FROM sync_contacts c WHERE c.contact_id = sync_field_values.contact_id)"
    )
    op.execute(f"UPDATE sync_field_values SET name_transactionid = {last}, value_transactionid = {last}")


def downgrade() -> None:
    with op.batch_alter_table("sync_field_values") as batch:
        batch.drop_column("value_transactionid")
        batch.drop_column("name_transactionid")
    with op.batch_alter_table("sync_contacts") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
        for name in _ATTRIBUTES:
            batch.drop_column(f"{name}_transactionid")
    op.drop_index("ix_listener_handler_attempts_run", table_name="listener_handler_attempts")
    op.drop_table("listener_handler_attempts")
    with op.batch_alter_table("listener_inbox") as batch:
        batch.drop_column("deduplicable")
