"""The admin sessions table, one per side (platform and listener): server-side sessions of the UIs.

The cookie holds a random token; the row is keyed by its SHA-256, so a copy of the database does not
yield a usable cookie. Deleting the row ends the session at once (logout); ``principal`` names who
is signed in (``user:<id>`` on the platform, ``admin`` on the listener), ``account_id`` the account
they are working in, ``password_tag`` the password it
signed in with, so changing the password ends every session made with the old one.
"""

from __future__ import annotations

import sqlalchemy as sa

TOKEN_HASH_LENGTH = 64


def sessions_table(metadata: sa.MetaData) -> sa.Table:
    """``admin_sessions`` on ``metadata`` (the same shape on both sides)."""
    return sa.Table(
        "admin_sessions",
        metadata,
        sa.Column("id", sa.String(TOKEN_HASH_LENGTH), primary_key=True),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("password_tag", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite")),
        # the account the person is working in (platform side; the account switcher changes it)
        sa.Index(None, "principal"),
        sa.Index(None, "expires_at"),
    )
