"""contactsync: both ends of the "Sync Contact to Third Party" automation action."""

from contactsync.errors import ContactSyncError

__version__ = "0.1.0"

__all__ = ["ContactSyncError", "__version__"]
