"""SyncPayload: the contact data one delivery carries, and its form, JSON and query encodings (wire.md).

One model, three encodings. The platform builds a payload from its database, :meth:`SyncPayload.select`
trims it to what the action synchronizes, and :meth:`~SyncPayload.to_form` / :meth:`~SyncPayload.to_json`
produce the body. The listener goes the other way with :meth:`~SyncPayload.from_form`,
:meth:`~SyncPayload.from_json` or :meth:`~SyncPayload.from_query`, each raising
:class:`~contactsync.errors.PayloadError` whose ``path`` names the bad key in wire terms (``fields[2].id``).

Wire conventions this module owns:

* A section that is ``None`` is not selected and is not sent. A selected empty list is ``[]`` in JSON and
  absent from a form body (``http_build_query`` drops empty arrays), so it decodes back as not selected.
* A missing scalar is sent as ``""``, never omitted; on the Python side it is ``None`` for integers and
  ``""`` for strings. Ids, ``clicks`` and scores are integers in JSON and accept decimal strings (forms).
* ``transactionid`` is a decimal string in both encodings: 63-bit integers lose precision as JSON numbers in
  JavaScript, and the receiver deduplicates on it.
* Unknown keys, at top level and inside items, are kept and sent back out as they came.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

import pydantic
import pydantic_core
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from contactsync.errors import PayloadError
from contactsync.wire import jsonbody, phpform
from contactsync.wire import transactionid as txid

__all__ = [
    "SECTIONS",
    "AutomationTrigger",
    "CampaignOpen",
    "Contact",
    "FieldValue",
    "GoalReach",
    "LeadScoreEntry",
    "LeadStatus",
    "LinkClick",
    "PageVisit",
    "SyncPayload",
    "WebhookTrigger",
]

SECTIONS: tuple[str, ...] = (
    "fields",
    "campaigns-opened",
    "links-clicked",
    "pages-visited",
    "automation-triggered",
    "goals-reached",
    "webhooks-triggered",
    "lead-score",
    "lead-status",
)
"""The selectable sections, in wire order (``transactionid`` and ``contact`` are always sent)."""

DEFAULT_MAX_INPUT_VARS = 100_000
DEFAULT_MAX_NESTING = 64

_INT = re.compile(r"\s*[+-]?[0-9]{1,19}\s*")
_INT64 = 1 << 63


def _kind(value: object) -> str:
    """How a value reads to someone who wrote the sender, in PHP terms."""
    if isinstance(value, Mapping):
        return "a map"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _wire_int(value: object) -> int | None:
    """An id, count or score: an integer, a decimal string (forms), or ``""``/null when missing."""
    if type(value) is int:
        return value
    if type(value) is str and value.isdigit() and value.isascii() and len(value) < 19:
        return int(value)  # the form case, kept fast: the listener validates every request
    if value is None or value == "":
        return None
    if isinstance(value, str) and _INT.fullmatch(value):
        number = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise ValueError(f"must be an integer, got {_kind(value)}")
    if not -_INT64 <= number < _INT64:
        raise ValueError(f"must fit in 64 bits, got {value!r}")
    return number


def _wire_str(value: object) -> str:
    """A text scalar: strings as they are, JSON numbers as their text, null as ``""``."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"must be a string, got {_kind(value)}")


def _transactionid(value: object) -> int:
    """A canonical decimal string (or a JSON integer) in 0..2**63-1."""
    if type(value) is int and 0 <= value <= txid.MAX_ID:
        return value
    try:
        return txid.parse(value)  # type: ignore[arg-type]
    except PayloadError as exc:
        raise ValueError(str(exc).removeprefix("transactionid ")) from None


def _string_keys(value: object, depth: int = 3) -> object:
    """PHP gives integer keys (``contact[5]=x``) and model keys are strings: payload, section, item."""
    if depth and isinstance(value, Mapping):
        return {k if type(k) is str else str(k): _string_keys(v, depth - 1) for k, v in value.items()}
    if depth and isinstance(value, list):
        return [_string_keys(v, depth - 1) for v in value]
    return value


def _as_list(value: object) -> object:
    """A list section: a list, a decoded PHP array ``{0: {...}, 1: {...}}`` (in key order), or null."""
    if isinstance(value, Mapping):
        return list(value.values())
    if value == "":
        raise ValueError(f"must be a list of maps, got {_kind(value)}")
    return value


WireInt = Annotated[int | None, BeforeValidator(_wire_int)]
WireStr = Annotated[str, BeforeValidator(_wire_str)]
TransactionId = Annotated[int, BeforeValidator(_transactionid)]


class _Item(BaseModel):
    """One map of a section: known keys typed, unknown keys kept in wire order after them."""

    model_config = ConfigDict(extra="allow")
    _wire: ClassVar[tuple[tuple[str, bool], ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._wire = tuple((name, info.annotation == (int | None)) for name, info in cls.model_fields.items())

    def to_wire(self, *, json_types: bool) -> dict[str, Any]:
        """This item as sent: missing integers as ``""``; integers as text unless ``json_types``."""
        out: dict[str, Any] = {}
        for name, is_int in self._wire:
            value = getattr(self, name)
            if is_int:
                value = "" if value is None else value if json_types else str(value)
            out[name] = value
        if self.__pydantic_extra__:
            out.update(self.__pydantic_extra__)
        return out


class Contact(_Item):
    """The contact the action ran for; ``profile_url`` is its page on the platform."""

    id: WireInt = None
    email: WireStr = ""
    phone: WireStr = ""
    profile_url: WireStr = ""


class FieldValue(_Item):
    """One custom field of the contact's list and the contact's value for it."""

    id: WireInt = None
    name: WireStr = ""
    value: WireStr = ""


class CampaignOpen(_Item):
    id: WireInt = None
    name: WireStr = ""
    open_date: WireStr = ""


class LinkClick(_Item):
    """A url the contact clicked; ``clicks`` is the contact's total on that url."""

    url: WireStr = ""
    clicks: WireInt = None


class PageVisit(_Item):
    page: WireStr = ""
    visit_date: WireStr = ""


class AutomationTrigger(_Item):
    id: WireInt = None
    name: WireStr = ""
    trigger_date: WireStr = ""


class GoalReach(_Item):
    id: WireInt = None
    name: WireStr = ""
    reach_date: WireStr = ""


class WebhookTrigger(_Item):
    id: WireInt = None
    name: WireStr = ""
    trigger_date: WireStr = ""


class LeadScoreEntry(_Item):
    id: WireInt = None
    name: WireStr = ""
    score: WireInt = None
    score_date: WireStr = ""


class LeadStatus(_Item):
    """The contact's total score and its label (e.g. Cold/Warm/Hot)."""

    score: WireInt = None
    label: WireStr = ""


_List = BeforeValidator(_as_list)


class SyncPayload(BaseModel):
    """What one delivery carries, sections in wire order; ``None`` means the section is not selected.

    Build it with Python names (``campaigns_opened=[...]``); on the wire the keys are hyphenated
    (``campaigns-opened``), and only those are recognised when decoding, so a stray ``campaigns_opened``
    key in a body stays an unknown key rather than filling the section.
    """

    model_config = ConfigDict(extra="allow", validate_by_name=True, validate_by_alias=True)

    transactionid: TransactionId
    contact: Contact
    fields: Annotated[list[FieldValue] | None, _List] = None
    campaigns_opened: Annotated[list[CampaignOpen] | None, _List] = Field(None, alias="campaigns-opened")
    links_clicked: Annotated[list[LinkClick] | None, _List] = Field(None, alias="links-clicked")
    pages_visited: Annotated[list[PageVisit] | None, _List] = Field(None, alias="pages-visited")
    automation_triggered: Annotated[list[AutomationTrigger] | None, _List] = Field(
        None, alias="automation-triggered"
    )
    goals_reached: Annotated[list[GoalReach] | None, _List] = Field(None, alias="goals-reached")
    webhooks_triggered: Annotated[list[WebhookTrigger] | None, _List] = Field(
        None, alias="webhooks-triggered"
    )
    lead_score: Annotated[list[LeadScoreEntry] | None, _List] = Field(None, alias="lead-score")
    lead_status: LeadStatus | None = Field(None, alias="lead-status")

    # --- out -----------------------------------------------------------------------------------------

    def to_wire(self, *, json_types: bool) -> dict[str, Any]:
        """The ordered structure a receiver sees: ``$_POST`` (``json_types=False``) or the JSON object."""
        out: dict[str, Any] = {
            "transactionid": str(self.transactionid),
            "contact": self.contact.to_wire(json_types=json_types),
        }
        for key in SECTIONS:
            value = getattr(self, _ATTR[key])
            if value is None:
                continue
            if isinstance(value, list):
                out[key] = [item.to_wire(json_types=json_types) for item in value]
            else:
                out[key] = value.to_wire(json_types=json_types)
        if self.__pydantic_extra__:
            out.update(self.__pydantic_extra__)
        return out

    def to_form(self) -> str:
        """The ``application/x-www-form-urlencoded`` body, byte-identical to PHP ``http_build_query``."""
        return phpform.encode(self.to_wire(json_types=False))

    def to_json(self) -> str:
        """The ``application/json`` body: compact, UTF-8 (not ``\\u`` escaped)."""
        wire = self.to_wire(json_types=True)
        try:
            return pydantic_core.to_json(wire).decode("utf-8")  # 4x json.dumps on a full payload
        except pydantic_core.PydanticSerializationError:
            # bytes that were not UTF-8 in a form body: JSON must be UTF-8, so they become U+FFFD
            return pydantic_core.to_json(_valid_utf8(wire)).decode("utf-8")

    def select(self, sections: Iterable[str], *, max_items: int = 100) -> SyncPayload:
        """Only ``sections`` (wire names), each list cut to its ``max_items`` most recent items.

        Lists are expected most recent first, as the platform builds them. Unknown top-level keys stay.
        """
        if max_items < 0:
            raise PayloadError(f"max_items must be 0 or more, got {max_items}", path="max_items")
        wanted = set(sections)
        unknown = sorted(wanted.difference(SECTIONS))
        if unknown:
            raise PayloadError(
                f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", path=unknown[0]
            )
        update: dict[str, Any] = {}
        for key in SECTIONS:
            attr = _ATTR[key]
            value = getattr(self, attr)
            if key not in wanted:
                update[attr] = None
            elif isinstance(value, list) and len(value) > max_items:
                update[attr] = value[:max_items]
        return self.model_copy(update=update)

    # --- in ------------------------------------------------------------------------------------------

    @classmethod
    def from_wire(cls, data: Mapping[Any, Any]) -> Self:
        """Validate a decoded body (``$_POST``-like or JSON object); wire keys only."""
        if not isinstance(data, Mapping):
            raise PayloadError(f"the payload must be a map of sections, got {_kind(data)}")
        try:
            return cls.model_validate(data, by_alias=True, by_name=False)
        except pydantic.ValidationError as exc:
            if not any(e["type"] == "invalid_key" for e in exc.errors()):
                raise _payload_error(exc, data) from None
        data = _string_keys(data)  # type: ignore[assignment]  # rare: integer keys among unknown keys
        try:
            return cls.model_validate(data, by_alias=True, by_name=False)
        except pydantic.ValidationError as exc:
            raise _payload_error(exc, data) from None

    @classmethod
    def check_wire(cls, data: Mapping[Any, Any]) -> int:
        """The transactionid of a decoded body that :meth:`from_wire` accepts, without building the model.

        The listener acknowledges a request once it is known to be valid; the model is rebuilt later by
        the handlers that need it. The common shapes (what our sender and the PHP decoder produce) are
        checked in one pass over the dict; anything else goes through :meth:`from_wire`, so what is
        accepted and the error raised are exactly :meth:`from_wire`'s.
        """
        tid = _plain_transactionid(data)
        return cls.from_wire(data).transactionid if tid is None else tid

    @classmethod
    def from_form(
        cls,
        body: bytes | str,
        *,
        max_input_vars: int = DEFAULT_MAX_INPUT_VARS,
        max_nesting: int = DEFAULT_MAX_NESTING,
        on_limit: Literal["drop", "raise"] = "raise",
    ) -> Self:
        """Decode a urlencoded POST body as PHP fills ``$_POST``, then validate it.

        Over the limits it raises :class:`~contactsync.errors.PHPFormLimitError` (``on_limit="raise"``,
        the default: never silently lose data) or drops like PHP does (``"drop"``).
        """
        decoded = phpform.decode(
            body, source="post", max_input_vars=max_input_vars, max_nesting=max_nesting, on_limit=on_limit
        )
        return cls.from_wire(decoded)

    @classmethod
    def from_query(
        cls,
        query: bytes | str,
        *,
        max_input_vars: int = DEFAULT_MAX_INPUT_VARS,
        max_nesting: int = DEFAULT_MAX_NESTING,
        on_limit: Literal["drop", "raise"] = "raise",
    ) -> Self:
        """Decode a GET query string (without ``?``) as PHP fills ``$_GET``, then validate it."""
        decoded = phpform.decode(
            query, source="get", max_input_vars=max_input_vars, max_nesting=max_nesting, on_limit=on_limit
        )
        return cls.from_wire(decoded)

    @classmethod
    def from_json(
        cls,
        body: bytes | str,
        *,
        max_input_vars: int = DEFAULT_MAX_INPUT_VARS,
        max_nesting: int = DEFAULT_MAX_NESTING,
    ) -> Self:
        """Parse a JSON body (an object) and validate it, under the same limits as :meth:`from_form`.

        Over a limit it raises :class:`~contactsync.errors.PHPFormLimitError`; a lone surrogate
        (``"\\ud800"``) is a :class:`~contactsync.errors.PayloadError` naming its key.
        """
        raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
        try:
            data = json.loads(raw, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise PayloadError(
                f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise PayloadError(f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise jsonbody.too_deep(raw, max_nesting=max_nesting) from None
        if not isinstance(data, dict):
            raise PayloadError(f"the JSON body must be an object, got {_kind(data)}")
        jsonbody.check_limits(
            data, size_bytes=len(raw), max_input_vars=max_input_vars, max_nesting=max_nesting
        )
        broken = jsonbody.lone_surrogate(data, raw)
        if broken is not None:
            raise PayloadError(f"{broken} holds a lone UTF-16 surrogate, which is not text", path=broken)
        return cls.from_wire(data)


_ATTR: dict[str, str] = {(info.alias or name): name for name, info in SyncPayload.model_fields.items()}

_SECTION_ITEMS: dict[str, tuple[type[_Item], bool]] = {
    "fields": (FieldValue, True),
    "campaigns-opened": (CampaignOpen, True),
    "links-clicked": (LinkClick, True),
    "pages-visited": (PageVisit, True),
    "automation-triggered": (AutomationTrigger, True),
    "goals-reached": (GoalReach, True),
    "webhooks-triggered": (WebhookTrigger, True),
    "lead-score": (LeadScoreEntry, True),
    "lead-status": (LeadStatus, False),
}
"""Each section's item model and whether it is a list (the model's own fields, checked at import)."""
if tuple(_SECTION_ITEMS) != SECTIONS:  # pragma: no cover - a section added to one and not the other
    raise AssertionError("_SECTION_ITEMS must list SECTIONS in order")

_ITEM_MODELS: list[type[_Item]] = [Contact, *(item for item, _ in _SECTION_ITEMS.values())]
_KNOWN: dict[type[_Item], dict[str, bool]] = {model: dict(model._wire) for model in _ITEM_MODELS}
"""Each item model's known keys and whether the key is an integer (``_Item._wire``)."""


def _plain_item(item: object, known: dict[str, bool]) -> bool:
    """Whether ``item`` surely validates: a dict with text keys, known scalars in their plain form."""
    if type(item) is not dict:
        return False
    for key, value in item.items():
        if type(key) is not str:
            return False
        is_int = known.get(key)
        if is_int is None:
            continue  # an unknown key: kept as it came, whatever it holds
        if type(value) is str:
            if is_int and value and not (value.isdigit() and value.isascii() and len(value) < 19):
                return False
        elif not (is_int and type(value) is int):
            return False
    return True


def _plain_transactionid(data: object) -> int | None:
    """The transactionid if ``data`` has a shape that surely validates, else ``None`` (ask the model).

    Only accepts what :meth:`SyncPayload.from_wire` accepts (a property test holds the two together).
    """
    if type(data) is not dict:
        return None
    tid = data.get("transactionid")
    if type(tid) is str:
        if not (tid.isdigit() and tid.isascii() and len(tid) <= 19 and (tid[0] != "0" or len(tid) == 1)):
            return None
        number = int(tid)
        if number > txid.MAX_ID:
            return None
    elif type(tid) is int and 0 <= tid <= txid.MAX_ID:
        number = tid
    else:
        return None
    if not _plain_item(data.get("contact"), _KNOWN[Contact]):
        return None
    for key, value in data.items():
        if type(key) is not str:
            return None
        spec = _SECTION_ITEMS.get(key)
        if spec is None or value is None:
            continue  # transactionid, contact, unknown keys; a section sent as null is not selected
        model, is_list = spec
        known = _KNOWN[model]
        if not is_list:
            if not _plain_item(value, known):
                return None
            continue
        items = value.values() if type(value) is dict else value if type(value) is list else None
        if items is None:
            return None
        for item in items:
            if not _plain_item(item, known):
                return None
    return number


def _valid_utf8(value: Any) -> Any:
    """``value`` with every string's undecodable bytes (surrogate escapes) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {_valid_utf8(k): _valid_utf8(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_valid_utf8(v) for v in value]
    return value


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _payload_error(exc: pydantic.ValidationError, data: object) -> PayloadError:
    """The first problem, with its path in wire terms; list positions shown as the keys that were sent."""
    problems = exc.errors(include_url=False)
    first = problems[0]
    path = ""
    current: object = data
    for part in first["loc"]:
        if isinstance(part, int):
            if isinstance(current, Mapping):  # a PHP array: name the key the sender used
                key = list(current)[part]
                current = current[key]
                path += f"[{key}]"
            else:
                current = current[part] if isinstance(current, list) else None
                path += f"[{part}]"
        else:
            current = current.get(part) if isinstance(current, Mapping) else None
            path += f".{part}" if path else part
    message = f"{path or 'the payload'} {_describe(first)}"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return PayloadError(message, path=path)


def _describe(problem: Any) -> str:
    kind = problem["type"]
    if kind == "missing":
        return "is required"
    if kind == "value_error":
        return str(problem["ctx"]["error"])
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return f"must be a map, got {_kind(problem['input'])}"
    if kind == "list_type":
        return f"must be a list of maps, got {_kind(problem['input'])}"
    return str(problem["msg"]).lower()
