"""Storage: SQLAlchemy Core schemas of both sides and the engine factory."""

from contactsync.db.engine import create_engine, normalize_url
from contactsync.db.metadata import listener_metadata, platform_metadata

__all__ = ["create_engine", "listener_metadata", "normalize_url", "platform_metadata"]
