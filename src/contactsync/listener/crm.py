"""The CRM forwarder: each accepted sync becomes one upsert of the contact's converged state.

The body is built from what the SQL projection holds for the contact with this delivery merged in
(:meth:`~contactsync.listener.projection.Projection.converged`), never from the delivery alone: a
retried older delivery then sends the newer values the projection already has, and an attribute or
section the state lacks is left out of the body rather than sent as ``null``. Every attempt is
recorded (``listener_handler_attempts``: target, status, duration, response excerpt).

Configured per CRM (any number, in ``listener_crm``): method, URL, an auth header, and a field
mapping from payload paths to the CRM's JSON body. Upserts are keyed by the contact's email or id:
the key is substituted into the URL (``{key}``, e.g. ``PUT https://crm.example/contacts/{key}``) and,
if ``key_field`` is set, also sent in the body.

Requests go out the way the dispatcher sends deliveries: through the SSRF-guarded connector
(:mod:`contactsync.delivery.netguard`) with one :func:`contactsync.delivery.attempt.send` per try;
a failure raises :class:`~contactsync.errors.HandlerError` carrying the status and headers, so the
handler runner retries it with the delivery retry policy (``Retry-After``, ``webhook-delivery:
abort`` and the backoff schedule included) and logs the last error on the handler run.

Mapping paths: ``transactionid``, ``contact.<key>``, ``lead-status.<key>``, ``fields.<name>`` (a custom
field by name), ``fields#<id>`` (by id), a whole section (``campaigns-opened``), or ``=text`` (a constant).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator

from contactsync.delivery.attempt import DEFAULT_USER_AGENT, send
from contactsync.delivery.netguard import NetPolicy, create_connector
from contactsync.errors import ConfigError, HandlerError, PayloadError
from contactsync.listener.handlers import AttemptRecord
from contactsync.listener.projection import KIND_OF
from contactsync.wire.payload import SECTIONS, SyncPayload

_TOP = frozenset({"transactionid", "contact", *SECTIONS})
EXCERPT_BYTES = 2000

StateReader = Callable[[SyncPayload, Collection[str]], Mapping[str, Any] | None]
"""The converged state of a payload's contact (with the given activity sections), in wire terms."""


class CRMConfig(BaseModel):
    """One CRM target; settings hold a list of these as JSON (``CONTACTSYNC_LISTENER_CRM``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=60)
    url: str
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    auth_header: str = ""
    """``Name: value``, e.g. ``Authorization: Bearer …``."""
    mapping: dict[str, str] = Field(default_factory=lambda: {"email": "contact.email"})
    upsert_by: Literal["email", "id"] = "email"
    key_field: str = ""
    allow_private_networks: bool = False
    allowed_cidrs: list[str] = Field(default_factory=list)
    connect_timeout_s: float = 5.0
    total_timeout_s: float = 15.0

    @field_validator("mapping")
    @classmethod
    def _paths(cls, mapping: dict[str, str]) -> dict[str, str]:
        for target, path in mapping.items():
            if path.startswith("="):
                continue
            head = path.split(".", 1)[0].split("#", 1)[0]
            if head not in _TOP:
                raise ValueError(f"mapping of {target!r}: {path!r} does not start with one of {sorted(_TOP)}")
        return mapping

    @field_validator("auth_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if value and ":" not in value:
            raise ValueError("auth_header must look like 'Name: value'")
        return value


def resolve(wire: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` in a payload's wire structure (``None`` when absent)."""
    if path.startswith("="):
        return path[1:]
    if path.startswith(("fields#", "fields.")):
        by_id = path[6] == "#"
        wanted = path[7:]
        for field in wire.get("fields") or []:
            if str(field.get("id" if by_id else "name")) == wanted:
                return field.get("value")
        return None
    head, _, rest = path.partition(".")
    value = wire.get(head)
    if rest:
        return value.get(rest) if isinstance(value, Mapping) else None
    return value


def sections_of(config: CRMConfig) -> frozenset[str]:
    """The activity sections a mapping sends (the only ones worth reading from the projection)."""
    heads = {path.split(".", 1)[0] for path in config.mapping.values() if not path.startswith("=")}
    return frozenset(heads & KIND_OF.keys())


def request_for(config: CRMConfig, wire: Mapping[str, Any]) -> tuple[str, bytes]:
    """The URL and JSON body of the upsert for a contact's state (pure: tests read it without a network).

    Targets whose path the state lacks are left out of the body.
    """
    contact = wire["contact"]
    key = contact.get(config.upsert_by)
    if key in (None, ""):
        raise PayloadError(
            f"cannot upsert by {config.upsert_by}: contact.{config.upsert_by} is empty",
            path=f"contact.{config.upsert_by}",
        )
    resolved = {target: resolve(wire, path) for target, path in config.mapping.items()}
    body = {target: value for target, value in resolved.items() if value is not None}
    if config.key_field:
        body[config.key_field] = key
    url = config.url.replace("{key}", quote(str(key), safe=""))
    return url, json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class CRMForwarder:
    """A handler that upserts each synced contact into one CRM."""

    def __init__(self, config: CRMConfig, *, state: StateReader) -> None:
        self.config = config
        self.name = f"crm:{config.name}"
        self._state = state
        self._sections = sections_of(config)
        self._policy = NetPolicy(
            allow_private_networks=config.allow_private_networks, allowed_cidrs=tuple(config.allowed_cidrs)
        )
        self._headers = {"Content-Type": "application/json", "User-Agent": DEFAULT_USER_AGENT}
        if config.auth_header:
            name, _, value = config.auth_header.partition(":")
            self._headers[name.strip()] = value.strip()
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, payload: SyncPayload) -> AttemptRecord:
        wire = await asyncio.to_thread(self._state, payload, self._sections)
        if wire is None:
            raise PayloadError("the delivery names no contact to upsert", path="contact.id")
        url, body = request_for(self.config, wire)
        if self._session is None:
            connector = create_connector(self._policy, limit=20)
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        result = await send(
            self._session,
            method=self.config.method,
            url=url,
            headers={**self._headers, "Idempotency-Key": str(payload.transactionid)},
            body=body,
            policy=self._policy,
            connect_timeout_s=self.config.connect_timeout_s,
            total_timeout_s=self.config.total_timeout_s,
        )
        excerpt = result.body[:EXCERPT_BYTES].decode("utf-8", "replace")
        record = AttemptRecord(
            ok=result.outcome.succeeded,
            status=result.status,
            duration_ms=round(result.duration_s * 1000),
            target=f"{self.config.method} {url}",
            detail=result.detail or excerpt,
        )
        if not result.outcome.succeeded:
            detail = result.detail or f"HTTP {result.status}: {excerpt[:200]}"
            raise HandlerError(
                f"{self.config.method} {url}: {detail}",
                status=result.status,
                headers=dict(result.outcome.headers),
                attempt=record,
            )
        return record

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def forwarders(configs: list[dict[str, Any]], *, state: StateReader | None) -> list[CRMForwarder]:
    """Forwarders for the ``listener_crm`` setting; a bad entry is a :class:`ConfigError`.

    ``state`` reads the converged contact from the SQL projection, which forwarders need.
    """
    if not configs:
        return []
    if state is None:
        raise ConfigError(
            "listener_crm needs the SQL projection (listener_projection=true): "
            "forwarders send the contact's converged state"
        )
    built = []
    for number, raw in enumerate(configs):
        try:
            built.append(CRMForwarder(CRMConfig.model_validate(raw), state=state))
        except ValueError as exc:
            raise ConfigError(f"listener_crm[{number}]: {exc}") from exc
    return built
