"""GET deliveries that carry no transactionid: the customer's own parameters, mapped onto a contact.

The original help article's GET example, ``?param1=[#SHORTCODE-1#]&param2=[#SHORTCODE_2#]``, sends
only parameters the customer chose. Such a request is accepted (listener.md, "GET deliveries"):

* its idempotency key is the ``webhook-id`` header, which the platform always sends (and which is
  the delivery's transactionid); without one a ``local-…`` key is generated and the inbox entry is
  marked not deduplicable;
* it is ordered against other deliveries by that key when it is a transactionid, else by its receive
  time in the same time-ordered id space;
* ``listener_get_mapping`` says which parameter is which contact attribute or custom field, so the
  projection and the CRM forwarders see an ordinary partial delivery. Parameters the mapping does not
  name stay in the inbox entry (and in the payload as unknown keys, for Python handlers).

Mapping targets: ``id`` (the contact id the projection keys on), ``email``, ``phone``,
``profile_url``, ``lead_score``, ``lead_label``, and ``field:<id>`` (a custom field's value by its id).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contactsync.errors import ConfigError, PayloadError
from contactsync.wire import transactionid as txid
from contactsync.wire.payload import SyncPayload

__all__ = [
    "CONTACT_TARGETS",
    "GetAdvice",
    "ParameterAdvice",
    "PlainKey",
    "advise",
    "check_mapping",
    "is_plain",
    "key_for",
    "order_id",
    "plain_payload",
]

CONTACT_TARGETS = ("id", "email", "phone", "profile_url")
_STATUS_TARGETS = {"lead_score": "score", "lead_label": "label"}
_FIELD = re.compile(r"field:([0-9]{1,19})")
LOCAL_PREFIX = "local-"
MAX_KEY_CHARS = 64
"""Keys longer than the inbox column (or than any transactionid) are not trusted as keys."""


def check_mapping(mapping: Mapping[str, str]) -> dict[str, str]:
    """The mapping if every target is known; else a :class:`ConfigError` naming the bad entry."""
    checked: dict[str, str] = {}
    targets: dict[str, str] = {}
    for parameter, target in mapping.items():
        if not parameter:
            raise ConfigError("listener_get_mapping: a parameter name is empty")
        if target not in CONTACT_TARGETS and target not in _STATUS_TARGETS and not _FIELD.fullmatch(target):
            known = ", ".join([*CONTACT_TARGETS, *_STATUS_TARGETS, "field:<id>"])
            raise ConfigError(f"listener_get_mapping: {parameter!r} maps to {target!r}; use one of {known}")
        if target in targets:
            raise ConfigError(
                f"listener_get_mapping: {parameter!r} and {targets[target]!r} both map to {target!r}"
            )
        targets[target] = parameter
        checked[parameter] = target
    return checked


def is_plain(params: Mapping[Any, Any]) -> bool:
    """Whether decoded GET parameters lack the wire's ``transactionid`` (so they need a key of their own)."""
    return "transactionid" not in params


PlainKey = tuple[str, bool]
"""An inbox key and whether it deduplicates (False for a generated one)."""


def key_for(webhook_id: str | None) -> PlainKey:
    """The idempotency key of a GET without a transactionid: its ``webhook-id``, or a generated one."""
    if webhook_id and len(webhook_id) <= MAX_KEY_CHARS and webhook_id.isprintable():
        return webhook_id, True
    return LOCAL_PREFIX + uuid.uuid4().hex, False


def order_id(key: str, received_at_ms: int) -> int:
    """The transactionid that orders a keyed GET: the key itself when it is one, else its receive time.

    Two GETs received in the same millisecond are told apart by a hash of their keys, so replaying
    an entry always orders it the same way.
    """
    try:
        return txid.parse(key)
    except PayloadError:
        sequence = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:2], "big")
        return txid.make(max(received_at_ms, txid.EPOCH_MS), sequence)


def plain_payload(
    params: Mapping[Any, Any], *, key: str, received_at_ms: int, mapping: Mapping[str, str]
) -> SyncPayload:
    """The payload of a GET without a transactionid: mapped parameters placed, the rest kept as they came."""
    data: dict[Any, Any] = dict(params)
    contact: dict[str, Any] = {}
    status: dict[str, Any] = {}
    fields: list[dict[str, Any]] = []
    for parameter, target in mapping.items():
        if parameter not in data:
            continue
        value = data.pop(parameter)
        if not isinstance(value, str):
            raise PayloadError(
                f"{parameter} maps to {target} and must be a single value, not an array", path=parameter
            )
        if target in CONTACT_TARGETS:
            contact[target] = value
        elif target in _STATUS_TARGETS:
            status[_STATUS_TARGETS[target]] = value
        else:
            fields.append({"id": target.removeprefix("field:"), "value": value})
    for section, mapped in (("contact", contact), ("lead-status", status)):
        sent = data.get(section)
        if sent is not None and not isinstance(sent, Mapping):
            raise PayloadError(f"{section} must be a map, got a single value", path=section)
        if mapped or sent is not None:
            data[section] = {**(sent or {}), **mapped}
    if fields:
        sent_fields = data.get("fields")
        if sent_fields is not None and not isinstance(sent_fields, Mapping):
            raise PayloadError("fields must be a list of maps, got a single value", path="fields")
        data["fields"] = [*(sent_fields or {}).values(), *fields]
    data.setdefault("contact", {})
    data["transactionid"] = str(order_id(key, received_at_ms))
    return SyncPayload.from_wire(data)


# --- what the platform tells the marketer about a GET template ----------------------------------------

_BUILTIN_TARGETS = {
    "ID": "id",
    "EMAIL": "email",
    "PHONE": "phone",
    "PROFILE_URL": "profile_url",
    "LEAD_SCORE": "lead_score",
    "LEAD_STATUS": "lead_label",
}
_PAIR = re.compile(r"([^&=]+)=([^&]*)")
_ANY_SHORTCODE = re.compile(r"\[#.*?#\]")
_HIDDEN = re.compile(r"\x00([0-9]+)\x00")
_ONE_SHORTCODE = re.compile(r"\[#\s*([A-Za-z][A-Za-z0-9_-]*)\s*#\]")
_FIELD_KEY = re.compile(r"FIELD_([0-9]{1,19})", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ParameterAdvice:
    """One query parameter of a GET template and where a contactsync listener can put it."""

    name: str
    value: str
    target: str | None
    note: str


@dataclass(frozen=True, slots=True)
class GetAdvice:
    """What a contactsync listener does with a GET template's requests (shown beside the action)."""

    wire: bool
    """The template sends ``transactionid`` and wire keys: projected as a partial delivery, no mapping."""
    parameters: tuple[ParameterAdvice, ...]
    mapping: dict[str, str]
    keyed: bool
    """Whether some parameter carries the contact id (without one the projection cannot key the contact)."""


def advise(template: str, field_ids: Mapping[str, int]) -> GetAdvice:
    """The listener mapping a GET template calls for: each parameter whose value is one shortcode of a
    contact attribute or custom field maps onto it; values shaped by functions stay unmapped."""
    codes: list[str] = []

    def hide(found: re.Match[str]) -> str:  # a shortcode's own '#' is not the fragment's
        codes.append(found.group(0))
        return f"\x00{len(codes) - 1}\x00"

    def shown(text: str) -> str:
        return _HIDDEN.sub(lambda found: codes[int(found.group(1))], text)

    query = _ANY_SHORTCODE.sub(hide, template).partition("?")[2].partition("#")[0]
    pairs = [(shown(name), shown(value)) for name, value in _PAIR.findall(query)]
    if any(name == "transactionid" for name, _ in pairs):
        return GetAdvice(True, (), {}, True)
    keys = {key.upper(): fid for key, fid in field_ids.items()}
    parameters: list[ParameterAdvice] = []
    taken: dict[str, str] = {}
    for name, value in pairs:
        found = _ONE_SHORTCODE.fullmatch(value)
        field = found.group(1).upper() if found else ""
        target: str | None = None
        if field in _BUILTIN_TARGETS:
            target = _BUILTIN_TARGETS[field]
        elif field in keys:
            target = f"field:{keys[field]}"
        elif _FIELD_KEY.fullmatch(field):
            target = f"field:{field[6:]}"
        if target is not None and target in taken:
            note = f"same value as {taken[target]}, which is the one mapped to {target}"
            target = None
        elif target is not None:
            taken[target] = name
            note = f"maps to {target}"
        elif found is None and "[#" in value:
            note = "shaped by functions or mixed with text: kept in the inbox, not mapped"
        elif found is None:
            note = "fixed text: kept in the inbox"
        else:
            note = f"{field} has no place in the listener's tables: kept in the inbox"
        parameters.append(ParameterAdvice(name, value, target, note))
    mapping = {p.name: p.target for p in parameters if p.target is not None}
    return GetAdvice(False, tuple(parameters), mapping, "id" in mapping.values())
