"""PHP-exact form codec: ``http_build_query`` on the way out, ``$_POST``/``parse_str`` on the way in.

A customer's PHP listener reads our body with ``$_POST``; any byte we get wrong changes what it sees.
So this module copies PHP 8.2's C code path by path (``ext/standard/http.c`` for encoding,
``main/php_variables.c`` and ``main/php_content_types.c`` for decoding) rather than any manual page,
and the tests check it against a real PHP binary.

Strings are PHP byte strings: text goes out as UTF-8, and bytes that are not UTF-8 travel inside
``str`` as ``surrogateescape`` code points, so ``s.encode("utf-8", "surrogateescape")`` always
gives back PHP's bytes.
"""

from __future__ import annotations

import binascii
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

from contactsync.errors import PHPFormLimitError

__all__ = ["PHP_INT_MAX", "FormStats", "decode", "encode", "measure", "php_float"]

PHP_INT_MAX = 2**63 - 1
PHP_INT_MIN = -(2**63)
Source = Literal["post", "get"]

_SEP = "\u0100"  # joins pieces before the one translate pass; never in the latin-1 view of bytes
_EQ = "\u0101"


def _table(*, rfc3986: bool) -> dict[int, str]:
    """Byte (as a latin-1 code point) → its encoding: php_url_encode or php_raw_url_encode."""
    safe = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_." + (b"~" if rfc3986 else b"")
    table = {byte: chr(byte) if byte in safe else f"%{byte:02X}" for byte in range(256)}
    if not rfc3986:
        table[0x20] = "+"
    table[ord(_SEP)] = "&"
    table[ord(_EQ)] = "="
    return table


_RFC1738 = _table(rfc3986=False)
_RFC3986 = _table(rfc3986=True)


def php_float(value: float) -> str:
    """A float as http_build_query writes it: ``%.*G`` with ``precision=14`` (php_gcvt)."""
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    mantissa, _, exponent = f"{abs(value):.13e}".partition("e")
    digits = mantissa.replace(".", "").rstrip("0")
    decpt = int(exponent) + 1
    if decpt < -3 or decpt > 14:
        exp = decpt - 1
        rest = digits[1:] or "0"
        return f"{sign}{digits[0]}.{rest}E{'-' if exp < 0 else '+'}{abs(exp)}"
    if decpt <= 0:
        return f"{sign}0.{'0' * -decpt}{digits}"
    if len(digits) <= decpt:
        return sign + digits + "0" * (decpt - len(digits))
    return f"{sign}{digits[:decpt]}.{digits[decpt:]}"


def _latin(text: str) -> str:
    """The UTF-8 bytes of ``text`` as latin-1 code points, so one translate table covers them."""
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("latin-1")


def _key(key: object) -> str:
    if isinstance(key, str):
        return _latin(key)
    if isinstance(key, int):
        return str(int(key))
    if isinstance(key, bytes):
        return key.decode("latin-1")
    raise TypeError(f"form keys must be str or int, not {type(key).__name__}")


def _scalar(value: object) -> str | None:
    """A leaf value as PHP converts it, or None when PHP skips it."""
    if isinstance(value, str):
        return _latin(value)
    if value is None:
        return None
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return php_float(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    raise TypeError(f"cannot form-encode a {type(value).__name__}")


def _walk(node: Mapping[Any, Any] | Sequence[Any], prefix: str | None, out: list[str]) -> None:
    """Append ``name<EQ>value`` for each leaf under ``node``; ``prefix`` is the parent name (None on top)."""
    items = node.items() if isinstance(node, Mapping) else enumerate(node)
    for raw_key, value in items:
        key = raw_key if type(raw_key) is str and raw_key.isascii() else _key(raw_key)
        name = key if prefix is None else f"{prefix}[{key}]"
        if type(value) is str:
            out.append(f"{name}{_EQ}{value}" if value.isascii() else f"{name}{_EQ}{_latin(value)}")
        elif isinstance(value, Mapping) or (
            isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)
        ):
            _walk(value, name, out)
        else:
            text = _scalar(value)
            if text is not None:
                out.append(f"{name}{_EQ}{text}")


def encode(data: Mapping[Any, Any] | Sequence[Any], *, rfc3986: bool = False) -> str:
    """Byte-identical to PHP 8 ``http_build_query($data)`` (``PHP_QUERY_RFC3986`` when asked).

    Mappings and sequences nest (a sequence has keys 0..n-1); ``None`` and empty arrays emit
    nothing; ``True``/``False`` become ``1``/``0``; floats use PHP's ``precision=14``.
    """
    out: list[str] = []
    _walk(data, None, out)
    return _SEP.join(out).translate(_RFC3986 if rfc3986 else _RFC1738)


# ---------------------------------------------------------------------------------------------
# Decoding: php_std_post_handler / php_default_treat_data → php_register_variable_ex


@dataclass(frozen=True, slots=True)
class FormStats:
    """What PHP's input limits see in a body: its variable count and deepest nesting level."""

    variables: int
    max_nesting: int

    def exceeded(
        self, *, source: Source = "post", max_input_vars: int = 1000, max_nesting: int = 64
    ) -> list[str]:
        """Names of the PHP limits under which a default listener would lose data."""
        over = []
        if self.variables > _kept(source, max_input_vars):
            over.append("max_input_vars")
        if self.max_nesting > max_nesting:
            over.append("max_input_nesting_level")
        return over


_PLUS = bytes.maketrans(b"+", b" ")
_MANGLE = str.maketrans(" .", "__")  # the base name of a variable
_MANGLE_TAIL = str.maketrans(" .[", "___")  # the rest of a name whose first '[' never closed
# A body that decodes in one pass: every '%' starts a valid escape and none yields '&' or '='.
_SLOW = re.compile(rb"%(?:26|3[dD]|(?![0-9A-Fa-f]{2}))")
_NUMERIC = re.compile(r"-?[1-9][0-9]*|0")


def _kept(source: Source, max_input_vars: int) -> int:
    """POST registers a variable before counting it, so it keeps one more than GET/parse_str."""
    return max_input_vars + 1 if source == "post" else max_input_vars


def _unquote(raw: bytes) -> bytes:
    """php_url_decode: '+' is a space, ``%XX`` a byte, any other '%' stays literal."""
    return unquote_to_bytes(raw.translate(_PLUS)) if raw else b""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _pieces(body: str | bytes, source: Source) -> list[tuple[str, str]]:
    """The decoded (name, value) of each piece PHP counts, in body order."""
    raw = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else bytes(body)
    if source == "get":
        raw = raw.partition(b"\0")[0]  # parse_str and $_GET read a C string
    if _SLOW.search(raw) is None:
        if b"%" in raw:
            raw = binascii.a2b_qp(raw.translate(_PLUS).replace(b"=", b"=3D").replace(b"%", b"="))
        elif b"+" in raw:
            raw = raw.translate(_PLUS)
        text = _text(raw).split("&")
        return [(name, value) for name, _, value in (piece.partition("=") for piece in _trim(text, source))]
    out = []
    for piece in _trim(raw.split(b"&"), source):
        name, _, value = piece.partition(b"=")
        out.append((_text(_unquote(name)), _text(_unquote(value))))
    return out


def _trim(pieces: list[Any], source: Source) -> list[Any]:
    """POST counts empty pieces but not the one after a final '&'; GET skips all empty pieces."""
    if source == "get":
        return [piece for piece in pieces if piece]
    if not pieces[-1]:
        pieces.pop()
    return pieces


def _php_key(index: str) -> str | int:
    """ZEND_HANDLE_NUMERIC_STR: a canonical decimal within PHP's int range is an int key."""
    if index and (index[0] in "0123456789-") and _NUMERIC.fullmatch(index):
        number = int(index)
        if PHP_INT_MIN <= number <= PHP_INT_MAX:
            return number
    return index


def _forbidden(index: str, name: str) -> bool:
    """php_is_forbidden_variable_name: a cookie prefix made by mangling, not sent as such."""
    if not index.startswith("__"):
        return False
    for prefix in ("__Host-", "__Secure-"):
        if index.startswith(prefix) and not name.startswith(prefix):
            return True
    return False


class _Arrays:
    """PHP's nNextFreeElement for the arrays that ``[]`` appends to (ids kept alive with them)."""

    __slots__ = ("next",)

    def __init__(self) -> None:
        self.next: dict[int, tuple[dict[Any, Any], int]] = {}

    def store(self, table: dict[Any, Any], key: str | int, value: Any) -> None:
        table[key] = value
        if type(key) is int and self.next:
            known = self.next.get(id(table))
            if known is not None and key >= known[1]:
                self.next[id(table)] = (table, min(key + 1, PHP_INT_MAX))

    def append(self, table: dict[Any, Any], value: Any) -> bool:
        """zend_hash_next_index_insert; False when the next index is taken (PHP_INT_MAX)."""
        known = self.next.get(id(table))
        if known is not None:
            key = known[1]
        else:
            ints = [k for k in table if type(k) is int]
            key = min(max(ints) + 1, PHP_INT_MAX) if ints else 0
        if key in table:
            return False
        table[key] = value
        self.next[id(table)] = (table, min(key + 1, PHP_INT_MAX))
        return True


def _register(top: dict[Any, Any], name: str, value: str, max_nesting: int, arrays: _Arrays) -> int:
    """php_register_variable_ex; returns the nesting level when it was exceeded, else 0."""
    if "\0" in name:
        name = name[: name.index("\0")]
    name = name.lstrip(" ")
    bracket = name.find("[")
    if bracket < 0:
        var = name.translate(_MANGLE)
        if var and not _forbidden(var, name):
            arrays.store(top, _php_key(var), value)
        return 0
    var = name[:bracket].translate(_MANGLE)
    if not var:
        return 0
    end = len(name)
    table = top
    index: str | None = var
    pos = bracket
    level = 0
    while True:
        level += 1
        if level > max_nesting:
            top.pop(_php_key(var), None)
            return level
        start = pos + 1
        scan = start + 1 if start < end and name[start] == " " else start
        if scan < end and name[scan] == "]":
            close, next_index = scan, None
        else:
            close = name.find("]", scan)
            if close < 0:  # not an index: the '[' and the tail are mangled into the name
                if level == 1:
                    index = var + "_" + name[start:].translate(_MANGLE_TAIL)
                break
            next_index = name[start:close]
        if index is None:
            child: dict[Any, Any] = {}
            if not arrays.append(table, child):
                return 0
        else:
            if _forbidden(index, name):
                return 0
            key = _php_key(index)
            found = table.get(key)
            if type(found) is dict:
                child = found
            else:
                child = {}
                arrays.store(table, key, child)
        table = child
        index = next_index
        pos = close + 1
        if pos >= end or name[pos] != "[":
            break
    if index is None:
        arrays.append(table, value)
    elif not _forbidden(index, name):
        arrays.store(table, _php_key(index), value)
    return 0


def _depth(name: str) -> int:
    """The nesting level PHP reaches while registering ``name`` (0 for a plain variable)."""
    name = name.partition("\0")[0].lstrip(" ")
    bracket = name.find("[")
    if bracket <= 0:
        return 0
    end = len(name)
    level, pos = 0, bracket
    while True:
        level += 1
        start = pos + 1
        scan = start + 1 if start < end and name[start] == " " else start
        close = scan if scan < end and name[scan] == "]" else name.find("]", scan)
        pos = close + 1
        if close < 0 or pos >= end or name[pos] != "[":
            return level


def decode(
    body: str | bytes,
    *,
    source: Source = "post",
    max_input_vars: int = 1000,
    max_nesting: int = 64,
    on_limit: Literal["drop", "raise"] = "drop",
) -> dict[str | int, Any]:
    """Exactly what PHP 8.2 puts in ``$_POST`` (urlencoded body) or ``parse_str``/``$_GET``.

    Values are ``str`` or nested ``dict`` in PHP's order. Over a limit PHP silently drops data;
    ``on_limit="raise"`` raises :class:`PHPFormLimitError` instead.
    """
    pieces = _pieces(body, source)
    kept = _kept(source, max_input_vars)
    if len(pieces) > kept:
        if on_limit == "raise":
            raise PHPFormLimitError(
                f"body has {len(pieces)} variables; PHP's max_input_vars={max_input_vars} "
                f"keeps {kept} ({source.upper()})",
                limit="max_input_vars",
                value=len(pieces),
                maximum=max_input_vars,
            )
        del pieces[kept:]
    top: dict[str | int, Any] = {}
    arrays = _Arrays()
    for name, value in pieces:
        level = _register(top, name, value, max_nesting, arrays)
        if level and on_limit == "raise":
            depth = _depth(name)
            raise PHPFormLimitError(
                f"variable {name[:60]!r} nests {depth} levels; PHP's max_input_nesting_level="
                f"{max_nesting} deletes it",
                limit="max_input_nesting_level",
                value=depth,
                maximum=max_nesting,
            )
    return top


def measure(body: str | bytes, *, source: Source = "post") -> FormStats:
    """How many variables PHP counts in ``body`` and the deepest nesting level of any of them."""
    pieces = _pieces(body, source)
    return FormStats(
        variables=len(pieces),
        max_nesting=max((_depth(name) for name, _ in pieces if "[" in name), default=0),
    )
