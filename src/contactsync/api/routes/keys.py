"""API keys of the caller's account: create (the key is shown once), list, revoke."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from contactsync.api.deps import Ctx, Id, Owner, audit
from contactsync.api.errors import ERROR_RESPONSES
from contactsync.api.routing import UtcRoute
from contactsync.tenancy import keys as svc

router = APIRouter(tags=["keys"], responses=ERROR_RESPONSES, route_class=UtcRoute)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    role: Literal["viewer", "editor", "owner"] = Field(default="editor", description="what the key may do")


@router.post("/keys", status_code=201)
def create_key(body: KeyCreate, ctx: Ctx, caller: Owner) -> svc.CreatedKey:
    """A new key for the caller's account (owners); ``key`` appears in this response only."""
    with ctx.tx() as conn:
        made = svc.create_key(
            conn, account_id=caller.account_id, name=body.name, role=body.role, now=ctx.runtime.clock()
        )
        audit(conn, ctx, caller, "key.create", "key", made.id, name=made.name, role=made.role)
        return made


@router.get("/keys")
def list_keys(ctx: Ctx, caller: Owner) -> list[svc.KeyOut]:
    with ctx.tx() as conn:
        return svc.list_keys(conn, account_id=caller.account_id)


@router.delete("/keys/{key_id}")
def revoke_key(key_id: Id, ctx: Ctx, caller: Owner) -> svc.KeyOut:
    """Revoke at once; requests with the key answer 401 from now on."""
    with ctx.tx() as conn:
        revoked = svc.revoke_key(conn, key_id, now=ctx.runtime.clock(), account_id=caller.account_id)
        audit(conn, ctx, caller, "key.revoke", "key", key_id, name=revoked.name)
        return revoked
