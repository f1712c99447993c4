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

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["encode", "php_float"]

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
