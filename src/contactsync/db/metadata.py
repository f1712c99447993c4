"""The two schemas: one MetaData per side, with names that Alembic can diff across databases."""

from __future__ import annotations

from sqlalchemy import MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

platform_metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Tables of the sending platform (contacts, automations, outbox, attempts …)."""

listener_metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Tables of the customer's listener (inbox, handler runs, projection)."""
