"""PHP-exact form codec: ``http_build_query`` on the way out, ``$_POST``/``parse_str`` on the way in.

A customer's PHP listener reads our body with ``$_POST``; any byte we get wrong changes what it sees.
So this module copies PHP 8.2's C code path by path (``ext/standard/http.c`` for encoding,
``main/php_variables.c`` and ``main/php_content_types.c`` for decoding) rather than any manual page,
and the tests check it against a real PHP binary.

Strings are PHP byte strings: text goes out as UTF-8, and bytes that are not UTF-8 travel inside
``str`` as ``surrogateescape`` code points, so ``s.encode("utf-8", "surrogateescape")`` always
gives back PHP's bytes.

``encode`` and ``decode`` run in C (``_phpform_c.c``, built with the package) when it is importable;
the Python code below stays the reference, serves any input the C code hands back (it returns None
for what it leaves to Python) and everything when the extension is missing.
"""

from __future__ import annotations

import binascii
import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

from contactsync.errors import PHPFormLimitError

__all__ = [
    "IMPLEMENTATION",
    "PHP_INT_MAX",
    "FormStats",
    "decode",
    "encode",
    "measure",
    "php_float",
    "print_r",
]

try:
    from contactsync.wire import _phpform_c as _accel
except ImportError:  # not built (a source tree without `pip install -e .`): Python only
    _accel = None  # type: ignore[assignment]

IMPLEMENTATION: Literal["c", "python"] = "python" if _accel is None else "c"

PHP_INT_MAX = 2**63 - 1
PHP_INT_MIN = -(2**63)
Source = Literal["post", "get"]

_SAFE_1738 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
_SAFE_3986 = _SAFE_1738 + b"~"
_BYTES = [bytes([byte]) for byte in range(256)]
_ESCAPES = [b"%%%02X" % byte for byte in range(256)]


def _table(*, rfc3986: bool) -> dict[int, str]:
    """Byte (as a latin-1 code point) → its encoding: php_url_encode or php_raw_url_encode."""
    safe = _SAFE_3986 if rfc3986 else _SAFE_1738
    table = {byte: chr(byte) if byte in safe else f"%{byte:02X}" for byte in range(256)}
    if not rfc3986:
        table[0x20] = "+"
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
        return key
    if isinstance(key, int):  # bool too, as PHP does
        return str(int(key))
    if isinstance(key, bytes):
        return key.decode("utf-8", "surrogateescape")
    raise TypeError(f"form keys must be str or int, not {type(key).__name__}")


def _scalar(value: object) -> str | None:
    """A leaf value as PHP converts it, or None when PHP skips it."""
    if isinstance(value, str):
        return value
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
        return bytes(value).decode("utf-8", "surrogateescape")
    raise TypeError(f"cannot form-encode a {type(value).__name__}")


class _KeyCache(dict[Any, str]):
    """Encoded keys seen so far: keys repeat in every payload and are not worth encoding again."""

    def __init__(self, table: dict[int, str]) -> None:
        super().__init__()
        self.table = table

    def __missing__(self, key: Any) -> str:
        if len(self) >= 4096:
            self.clear()
        encoded = self[key] = _latin(_key(key)).translate(self.table)
        return encoded


_KEYS_RFC1738 = _KeyCache(_RFC1738)
_KEYS_RFC3986 = _KeyCache(_RFC3986)


def _walk(
    node: Mapping[Any, Any] | Sequence[Any],
    prefix: str | None,
    keys: _KeyCache,
    names: list[str],
    values: list[str],
) -> None:
    """Collect the encoded name and the raw value of each leaf under ``node`` (``prefix`` None on top).

    Exact type checks come first: this is the sender's hot path and ABC checks cost more than the work.
    """
    items: Iterable[tuple[Any, Any]] = (
        node.items() if type(node) is dict or isinstance(node, Mapping) else enumerate(node)
    )
    for raw_key, value in items:
        key = str(raw_key) if type(raw_key) is int else keys[raw_key]
        name = key if prefix is None else f"{prefix}%5B{key}%5D"
        kind = type(value)
        if kind is str:
            names.append(name)
            values.append(value)
        elif kind is int:
            names.append(name)
            values.append(str(value))
        elif (
            kind is dict
            or kind is list
            or isinstance(value, Mapping)
            or (isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray))
        ):
            _walk(value, name, keys, names, values)
        else:
            text = _scalar(value)
            if text is not None:
                names.append(name)
                values.append(text)


def encode(data: Mapping[Any, Any] | Sequence[Any], *, rfc3986: bool = False) -> str:
    """Byte-identical to PHP 8 ``http_build_query($data)`` (``PHP_QUERY_RFC3986`` when asked).

    Mappings and sequences nest (a sequence has keys 0..n-1); ``None`` and empty arrays emit
    nothing; ``True``/``False`` become ``1``/``0``; floats use PHP's ``precision=14``.
    """
    if _accel is not None:
        encoded = _accel.encode(data, rfc3986, php_float)
        if encoded is not None:
            return encoded
    return _encode_py(data, rfc3986=rfc3986)


def _encode_py(data: Mapping[Any, Any] | Sequence[Any], *, rfc3986: bool = False) -> str:
    """The reference :func:`encode`, in Python."""
    names: list[str] = []
    values: list[str] = []
    _walk(data, None, _KEYS_RFC3986 if rfc3986 else _KEYS_RFC1738, names, values)
    if not names:
        return ""
    return "&".join(map("=".join, zip(names, _encode_values(values, rfc3986=rfc3986), strict=True)))


def _encode_values(values: list[str], *, rfc3986: bool) -> list[str]:
    """All values at once, one ``bytes.replace`` per distinct unsafe byte: per-character work in C.

    Joined with NUL, which every encoding escapes, and split again; a value holding NUL itself
    takes the per-character path.
    """
    joined = "\0".join(values)
    if joined.count("\0") != len(values) - 1:
        table = _RFC3986 if rfc3986 else _RFC1738
        return [_latin(value).translate(table) for value in values]
    raw = joined.encode("utf-8", "surrogateescape")
    unsafe = set(raw.translate(None, (_SAFE_3986 if rfc3986 else _SAFE_1738) + b"\x00"))
    if not unsafe:
        return joined.split("\0")
    if 0x25 in unsafe:  # first, so the '%' of later escapes stays
        raw = raw.replace(b"%", b"%25")
        unsafe.discard(0x25)
    space = not rfc3986 and 0x20 in unsafe
    if space:  # last, after any real '+' became %2B
        unsafe.discard(0x20)
    for byte in unsafe:
        raw = raw.replace(_BYTES[byte], _ESCAPES[byte])
    if space:
        raw = raw.replace(b" ", b"+")
    return raw.decode("ascii").split("\0")


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
_MARK = "\x01"
# Escapes that must not split a body decoded in one pass; a real \x01 is escaped first.
_MARKERS = (
    (b"\x01", b"\x01c"),
    (b"%01", b"\x01c"),
    (b"%26", b"\x01a"),
    (b"%3D", b"\x01b"),
    (b"%3d", b"\x01b"),
)
_NUMERIC = re.compile(r"-?[1-9][0-9]*|0")
_SPACE = " \t\n\v\f\r"  # C isspace(): one of these may open an index, so "[\t]" is "[]"
_PATH_CHARS = 200  # of a variable name named in a limit error


def _kept(source: Source, max_input_vars: int) -> int:
    """POST registers a variable before counting it, so it keeps one more than GET/parse_str."""
    return max_input_vars + 1 if source == "post" else max_input_vars


def _unquote(raw: bytes) -> bytes:
    """php_url_decode: '+' is a space, ``%XX`` a byte, any other '%' stays literal."""
    return unquote_to_bytes(raw.translate(_PLUS)) if raw else b""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _pieces(body: str | bytes, source: Source) -> list[tuple[str, str, str]]:
    """The decoded ``(name, "=" or "", value)`` of each piece PHP counts, in body order.

    The fast path decodes the whole body in one C call (``binascii.a2b_qp`` after turning ``%XX``
    into ``=XX``) and splits afterwards; escapes that decode to ``&`` or ``=`` are first swapped
    for ``\\x01``-markers so they cannot split, and restored per part. Bodies with a malformed
    ``%`` take the piece-by-piece path, which keeps it literal as PHP does.
    """
    raw = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
    if source == "get" and b"\0" in raw:
        raw = raw[: raw.index(b"\0")]  # parse_str and $_GET read a C string
    marked = False
    if b"%" in raw:
        work = raw
        if b"%26" in work or b"%3D" in work or b"%3d" in work:
            marked = True
            for escape, marker in _MARKERS:
                work = work.replace(escape, marker)
        decoded = binascii.a2b_qp(work.translate(_PLUS).replace(b"=", b"=3D").replace(b"%", b"="))
        # Each valid escape shrinks the body by 2 bytes, a malformed '%' by at most 1 (a2b_qp's soft
        # line breaks, "=\n" and "=\r", are excluded first): any other length means a malformed '%'.
        if len(decoded) != len(work) - 2 * work.count(b"%") or b"%\n" in work or b"%\r" in work:
            return _pieces_slowly(raw, source)
        raw = decoded
    elif b"+" in raw:
        raw = raw.translate(_PLUS)
    pieces = _trim(_text(raw).split("&"), source)
    if marked:
        return [_unmark(piece) if _MARK in piece else piece.partition("=") for piece in pieces]
    return [piece.partition("=") for piece in pieces]


def _unmark(piece: str) -> tuple[str, str, str]:
    """Partition a piece that holds markers, then turn them back into what they stand for."""
    name, eq, value = piece.partition("=")
    return (
        name.replace("\x01a", "&").replace("\x01b", "=").replace("\x01c", _MARK),
        eq,
        value.replace("\x01a", "&").replace("\x01b", "=").replace("\x01c", _MARK),
    )


def _pieces_slowly(raw: bytes, source: Source) -> list[tuple[str, str, str]]:
    out = []
    for piece in _trim(raw.split(b"&"), source):
        name, eq, value = piece.partition(b"=")
        out.append((_text(_unquote(name)), "=" if eq else "", _text(_unquote(value))))
    return out


def _trim(pieces: list[Any], source: Source) -> list[Any]:
    """POST counts empty pieces but not the one after a final '&'; GET skips all empty pieces."""
    if source == "get":
        return list(filter(None, pieces))
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


# PHP's nNextFreeElement, for the arrays that '[]' appended to: id → (array, next index). The array is
# kept in the value so its id cannot be reused while decoding.
_Nexts = dict[int, tuple[dict[Any, Any], int]]


def _store(nexts: _Nexts, table: dict[Any, Any], key: str | int, value: Any) -> None:
    table[key] = value
    if type(key) is int and nexts:
        known = nexts.get(id(table))
        if known is not None and key >= known[1]:
            nexts[id(table)] = (table, min(key + 1, PHP_INT_MAX))


def _append(nexts: _Nexts, table: dict[Any, Any], value: Any) -> bool:
    """zend_hash_next_index_insert; False when the next index is taken (PHP_INT_MAX)."""
    known = nexts.get(id(table))
    if known is not None:
        key = known[1]
    else:
        ints = [k for k in table if type(k) is int]
        key = min(max(ints) + 1, PHP_INT_MAX) if ints else 0
    if key in table:
        return False
    table[key] = value
    nexts[id(table)] = (table, min(key + 1, PHP_INT_MAX))
    return True


@functools.lru_cache(maxsize=8192)
def _path(name: str) -> tuple[tuple[str | int, ...], str | int] | None:
    """The keys a plain ``base[k1]…[kn]`` name assigns along, or None when PHP's full walk must run.

    Names repeat across requests (``fields[3][name]``), so this is cached; anything unusual (appends,
    spaces, stray brackets, NUL, cookie prefixes) returns None.
    """
    if not name or name[0] == " " or "\0" in name:
        return None
    bracket = name.find("[")
    var = (name if bracket < 0 else name[:bracket]).translate(_MANGLE)
    if not var or _forbidden(var, name):
        return None
    if bracket < 0:
        return (), _php_key(var)
    if name[-1] != "]":
        return None
    keys = name[bracket + 1 : -1].split("][")
    for key in keys:
        if not key or key[0] in _SPACE or "[" in key or "]" in key or _forbidden(key, name):
            return None
    return (_php_key(var), *map(_php_key, keys[:-1])), _php_key(keys[-1])


def _register(top: dict[Any, Any], name: str, value: str, max_nesting: int, nexts: _Nexts) -> int:
    """php_register_variable_ex; returns the nesting level when it was exceeded, else 0."""
    if "\0" in name:
        name = name[: name.index("\0")]
    name = name.lstrip(" ")
    bracket = name.find("[")
    if bracket < 0:
        var = name.translate(_MANGLE)
        if var and not _forbidden(var, name):
            _store(nexts, top, _php_key(var), value)
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
        scan = start + 1 if start < end and name[start] in _SPACE else start  # isspace(): [\t] appends
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
            if not _append(nexts, table, child):
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
                _store(nexts, table, key, child)
        table = child
        index = next_index
        pos = close + 1
        if pos >= end or name[pos] != "[":
            break
    if index is None:
        _append(nexts, table, value)
    elif not _forbidden(index, name):
        _store(nexts, table, _php_key(index), value)
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
        scan = start + 1 if start < end and name[start] in _SPACE else start  # isspace(): [\t] appends
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
    if _accel is not None:
        decoded = _accel.decode(body, source, max_input_vars, max_nesting, on_limit)
        if decoded is not None:
            return decoded
    return _decode_py(
        body, source=source, max_input_vars=max_input_vars, max_nesting=max_nesting, on_limit=on_limit
    )


def _decode_py(
    body: str | bytes,
    *,
    source: Source = "post",
    max_input_vars: int = 1000,
    max_nesting: int = 64,
    on_limit: Literal["drop", "raise"] = "drop",
) -> dict[str | int, Any]:
    """The reference :func:`decode`, in Python."""
    pieces = _pieces(body, source)
    kept = max_input_vars + 1 if source == "post" else max_input_vars  # see _kept()
    if len(pieces) > kept:
        if on_limit == "raise":
            raise PHPFormLimitError(
                f"body has {len(pieces)} variables; PHP's max_input_vars={max_input_vars} "
                f"keeps {kept} ({source.upper()})",
                limit="max_input_vars",
                value=len(pieces),
                maximum=max_input_vars,
                path=pieces[kept][0][:_PATH_CHARS],
            )
        del pieces[kept:]
    top: dict[str | int, Any] = {}
    appended: _Nexts = {}  # stays empty unless a '[]' appended somewhere
    last_parents: tuple[str | int, ...] | None = None
    last_table = top
    for name, _, value in pieces:
        path = _path(name)
        if path is not None and not appended and len(path[0]) <= max_nesting:
            # Inlined: the common case, a plain base[k1]…[kn] name. Siblings usually follow each
            # other (fields[3][id], fields[3][name]); the previous piece cannot have detached its
            # own array, so the same parents mean the same array.
            parents, leaf = path
            if parents != last_parents:
                last_table = top
                for key in parents:
                    child = last_table.get(key)
                    if type(child) is not dict:
                        child = last_table[key] = {}
                    last_table = child
                last_parents = parents
            last_table[leaf] = value
            continue
        last_parents = None
        level = _register(top, name, value, max_nesting, appended)
        if level and on_limit == "raise":
            depth = _depth(name)
            raise PHPFormLimitError(
                f"variable {name[:60]!r} nests {depth} levels; PHP's max_input_nesting_level="
                f"{max_nesting} deletes it",
                limit="max_input_nesting_level",
                value=depth,
                maximum=max_nesting,
                path=name[:_PATH_CHARS],
            )
    return top


def measure(body: str | bytes, *, source: Source = "post") -> FormStats:
    """How many variables PHP counts in ``body`` and the deepest nesting level of any of them."""
    pieces = _pieces(body, source)
    return FormStats(
        variables=len(pieces),
        max_nesting=max((_depth(name) for name, _, _ in pieces if "[" in name), default=0),
    )


def print_r(value: Mapping[Any, Any] | str) -> str:
    """PHP's ``print_r($value, true)`` of a decoded form: what a customer's debug page shows."""
    if not isinstance(value, Mapping):
        return str(value)
    out: list[str] = []
    _print_array(value, 0, out)
    return "".join(out)


def _print_array(table: Mapping[Any, Any], indent: int, out: list[str]) -> None:
    """print_hash in Zend/zend.c: '(' at ``indent``, entries 4 deeper, nested arrays 8 deeper."""
    pad = " " * indent
    out.append(f"Array\n{pad}(\n")
    for key, item in table.items():
        out.append(f"{pad}    [{key}] => ")
        if isinstance(item, Mapping):
            _print_array(item, indent + 8, out)
            out.append("\n")
        else:
            out.append(f"{item}\n")
    out.append(f"{pad})\n")
