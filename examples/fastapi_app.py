"""A customer's existing FastAPI app gains a contactsync listener: one router.

Run: CONTACTSYNC_LISTENER_TOKEN=… CONTACTSYNC_LISTENER_SECRET=whsec_… python examples/fastapi_app.py
Each verified sync is appended as one JSON line to $SYNC_LOG (default: synced.jsonl).
"""

from __future__ import annotations

import json
import os

import uvicorn
from fastapi import FastAPI

from contactsync.listener.adapters.fastapi import sync_router
from contactsync.wire.payload import SyncPayload

TOKEN = os.environ["CONTACTSYNC_LISTENER_TOKEN"]
SECRET = os.environ.get("CONTACTSYNC_LISTENER_SECRET") or None
LOG = os.environ.get("SYNC_LOG", "synced.jsonl")

app = FastAPI()


async def on_sync(payload: SyncPayload) -> None:
    """The customer's "backend service": here, remember who was synced."""
    with open(LOG, "a", encoding="utf-8") as out:
        out.write(json.dumps({"framework": "fastapi", **payload.to_wire(json_types=True)}) + "\n")


app.include_router(sync_router(f"/sync/{TOKEN}", on_sync, secret=SECRET))

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_level="warning")
