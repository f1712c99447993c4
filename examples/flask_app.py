"""A customer's existing Flask app gains a contactsync listener in a few lines.

Run: CONTACTSYNC_LISTENER_TOKEN=… CONTACTSYNC_LISTENER_SECRET=whsec_… python examples/flask_app.py
Each verified sync is appended as one JSON line to $SYNC_LOG (default: synced.jsonl).
"""

from __future__ import annotations

import json
import os

from flask import Flask

from contactsync.listener.adapters.flask import METHODS, sync_view
from contactsync.wire.payload import SyncPayload

TOKEN = os.environ["CONTACTSYNC_LISTENER_TOKEN"]
SECRET = os.environ.get("CONTACTSYNC_LISTENER_SECRET") or None
LOG = os.environ.get("SYNC_LOG", "synced.jsonl")

app = Flask(__name__)


def on_sync(payload: SyncPayload) -> None:
    """The customer's "backend service": here, remember who was synced."""
    with open(LOG, "a", encoding="utf-8") as out:
        out.write(json.dumps({"framework": "flask", **payload.to_wire(json_types=True)}) + "\n")


app.add_url_rule(f"/sync/{TOKEN}", view_func=sync_view(on_sync, secret=SECRET), methods=METHODS)

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
