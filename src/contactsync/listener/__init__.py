"""The customer's side: a ready-made listener app, and ``verify``/``parse`` for bring-your-own web apps."""

from contactsync.listener.app import create_app
from contactsync.listener.handlers import Handler, load_handler, replay
from contactsync.listener.library import Limits, error_response, parse, secret_keys, verify

__all__ = [
    "Handler",
    "Limits",
    "create_app",
    "error_response",
    "load_handler",
    "parse",
    "replay",
    "secret_keys",
    "verify",
]
