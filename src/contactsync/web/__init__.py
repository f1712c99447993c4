"""The admin web UI: server-rendered pages for the platform and the listener (Jinja2, own CSS/JS)."""

from contactsync.web.app import close_web_app, create_listener_web_app, create_web_app
from contactsync.web.security import hash_password

__all__ = ["close_web_app", "create_listener_web_app", "create_web_app", "hash_password"]
