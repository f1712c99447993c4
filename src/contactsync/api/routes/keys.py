"""API keys of the caller's account: create (the key is shown once), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from contactsync.api import keys as svc
from contactsync.api.deps import Caller, Ctx, Id
from contactsync.api.errors import ERROR_RESPONSES
from contactsync.api.routing import UtcRoute

router = APIRouter(tags=["keys"], responses=ERROR_RESPONSES, route_class=UtcRoute)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)


@router.post("/keys", status_code=201)
def create_key(body: KeyCreate, ctx: Ctx, caller: Caller) -> svc.CreatedKey:
    """A new key for the caller's account; ``key`` appears in this response only."""
    with ctx.tx() as conn:
        return svc.create_key(conn, account_id=caller.account_id, name=body.name, now=ctx.runtime.clock())


@router.get("/keys")
def list_keys(ctx: Ctx, caller: Caller) -> list[svc.KeyOut]:
    with ctx.tx() as conn:
        return svc.list_keys(conn, account_id=caller.account_id)


@router.delete("/keys/{key_id}")
def revoke_key(key_id: Id, ctx: Ctx, caller: Caller) -> svc.KeyOut:
    """Revoke at once; requests with the key answer 401 from now on."""
    with ctx.tx() as conn:
        return svc.revoke_key(conn, key_id, now=ctx.runtime.clock(), account_id=caller.account_id)
