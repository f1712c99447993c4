"""The CRM forwarder: each accepted sync becomes one upsert request to the customer's CRM.

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

import json
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator

from contactsync.delivery.attempt import DEFAULT_USER_AGENT, send
from contactsync.delivery.netguard import NetPolicy, create_connector
from contactsync.errors import ConfigError, HandlerError, PayloadError
from contactsync.wire.payload import SECTIONS, SyncPayload

_TOP = frozenset({"transactionid", "contact", *SECTIONS})


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


def request_for(config: CRMConfig, payload: SyncPayload) -> tuple[str, bytes]:
    """The URL and JSON body of the upsert for ``payload`` (pure: tests read it without a network)."""
    wire = payload.to_wire(json_types=True)
    contact = wire["contact"]
    key = contact.get(config.upsert_by)
    if key in (None, ""):
        raise PayloadError(
            f"cannot upsert by {config.upsert_by}: contact.{config.upsert_by} is empty",
            path=f"contact.{config.upsert_by}",
        )
    body = {target: resolve(wire, path) for target, path in config.mapping.items()}
    if config.key_field:
        body[config.key_field] = key
    url = config.url.replace("{key}", quote(str(key), safe=""))
    return url, json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class CRMForwarder:
    """A handler that upserts each synced contact into one CRM."""

    def __init__(self, config: CRMConfig) -> None:
        self.config = config
        self.name = f"crm:{config.name}"
        self._policy = NetPolicy(
            allow_private_networks=config.allow_private_networks, allowed_cidrs=tuple(config.allowed_cidrs)
        )
        self._headers = {"Content-Type": "application/json", "User-Agent": DEFAULT_USER_AGENT}
        if config.auth_header:
            name, _, value = config.auth_header.partition(":")
            self._headers[name.strip()] = value.strip()
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, payload: SyncPayload) -> None:
        url, body = request_for(self.config, payload)
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
        if not result.outcome.succeeded:
            detail = result.detail or f"HTTP {result.status}: {result.body[:200].decode('utf-8', 'replace')}"
            raise HandlerError(
                f"{self.config.method} {url}: {detail}",
                status=result.status,
                headers=dict(result.outcome.headers),
            )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def forwarders(configs: list[dict[str, Any]]) -> list[CRMForwarder]:
    """Forwarders for the ``listener_crm`` setting; a bad entry is a :class:`ConfigError`."""
    built = []
    for number, raw in enumerate(configs):
        try:
            built.append(CRMForwarder(CRMConfig.model_validate(raw)))
        except ValueError as exc:
            raise ConfigError(f"listener_crm[{number}]: {exc}") from exc
    return built
