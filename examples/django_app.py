"""A customer's existing Django project gains a contactsync listener: one URL pattern.

This single file is a whole Django project so that it runs as is:
CONTACTSYNC_LISTENER_TOKEN=… CONTACTSYNC_LISTENER_SECRET=whsec_… python examples/django_app.py
Each verified sync is appended as one JSON line to $SYNC_LOG (default: synced.jsonl).
"""

from __future__ import annotations

import json
import os
import sys

import django
from django.conf import settings
from django.urls import path

from contactsync.listener.adapters.django import sync_view
from contactsync.wire.payload import SyncPayload

TOKEN = os.environ["CONTACTSYNC_LISTENER_TOKEN"]
SECRET = os.environ.get("CONTACTSYNC_LISTENER_SECRET") or None
LOG = os.environ.get("SYNC_LOG", "synced.jsonl")

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="example-only",
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)
django.setup()


def on_sync(payload: SyncPayload) -> None:
    """The customer's "backend service": here, remember who was synced."""
    with open(LOG, "a", encoding="utf-8") as out:
        out.write(json.dumps({"framework": "django", **payload.to_wire(json_types=True)}) + "\n")


urlpatterns = [path(f"sync/{TOKEN}", sync_view(on_sync, secret=SECRET))]

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    port = os.environ.get("PORT", "8000")
    execute_from_command_line([sys.argv[0], "runserver", "--noreload", f"127.0.0.1:{port}"])
