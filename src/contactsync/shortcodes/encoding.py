"""URL rules: where each shortcode lands, how its value is encoded, what literal text may hold.

The component of every shortcode is decided at compile time from the literal text before it:

* the template must start with literal ``http://`` or ``https://`` and a literal authority
  (``host[:port]``) that ends with a literal ``/``, ``?`` or ``#`` (or the end of the template),
  so no value can ever change the scheme, host or port — not even ``.evil.com`` after the host;
* after the authority a shortcode is in the **path** until the first literal ``?`` (**query**) or
  ``#`` (**fragment**).

Values are encoded as PHP does: query → ``urlencode`` (space ``+``, only ``A-Za-z0-9-_.`` kept);
path and fragment → ``rawurlencode`` (space ``%20``, ``~`` kept). ``RAW`` values keep URL syntax
(``&``, ``=``, ``/``, valid ``%XX`` …) but still lose what would make the URL unparseable: controls,
spaces, non-ASCII, ``"<>\\^`{|}``, ``#`` (a value never starts a fragment) and stray ``%``.

Encoders work on the value's UTF-8 bytes seen as Latin-1 text with one ``str.translate`` table, which
is several times faster than :func:`urllib.parse.quote` and exactly PHP's output.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from contactsync.shortcodes.normalizers import scrub

Component = Literal["path", "query", "fragment", "text"]
MAX_URL_BYTES = 8192

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_PCT = {i: f"%{i:02X}" for i in range(256)}
_QUERY_TABLE = {**_PCT, **{ord(c): c for c in _ALNUM + "-_."}, ord(" "): "+"}
_PATH_TABLE = {**_PCT, **{ord(c): c for c in _ALNUM + "-_.~"}}
# what a URL may hold literally (RFC 3986 unreserved + reserved, plus `[`/`]` that PHP forms use)
URL_CHARS = frozenset(_ALNUM + "-._~:/?#[]@!$&'()*+,;=%")
_RAW_TABLE = {**_PCT, **{ord(c): c for c in URL_CHARS if c != "#"}}
_STRAY_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _translator(table: dict[int, str]) -> Callable[[str], str]:
    def encode(value: str) -> str:
        try:
            return value.encode("utf-8").decode("latin-1").translate(table)
        except UnicodeEncodeError:
            return scrub(value).encode("utf-8").decode("latin-1").translate(table)

    return encode


php_urlencode = _translator(_QUERY_TABLE)
php_urlencode.__doc__ = "PHP ``urlencode``: RFC 1738 style, space as ``+``, ``~`` encoded."
php_rawurlencode = _translator(_PATH_TABLE)
php_rawurlencode.__doc__ = "PHP ``rawurlencode``: RFC 3986 style, space as ``%20``, ``~`` kept."
_raw_translate = _translator(_RAW_TABLE)


def raw_encode(value: str) -> str:
    """``RAW``: keep URL syntax, encode only what would make the URL unparseable."""
    if "%" in value:
        value = _STRAY_PCT.sub("%25", value)
    return _raw_translate(value)


def _keep(value: str) -> str:
    return value


def encoder(component: Component, *, raw: bool) -> Callable[[str], str]:
    """The encoder for a value landing in ``component``."""
    if component == "text":
        return _keep
    if raw:
        return raw_encode
    return php_urlencode if component == "query" else php_rawurlencode


_SCHEME = re.compile(r"https?://", re.IGNORECASE)
_USERINFO = re.compile(
    r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})*@?"  # optional userinfo, checked again below
)
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9])?\.?)(?::([0-9]{1,5}))?")


class LayoutError(ValueError):
    """A URL rule broken at ``offset`` of the template."""

    def __init__(self, message: str, offset: int, text: str = "") -> None:
        super().__init__(message)
        self.offset = offset
        self.text = text


def check_literal(text: str, start: int) -> None:
    """Reject literal characters a URL cannot hold (raise LayoutError at the first)."""
    for index, char in enumerate(text):
        if char not in URL_CHARS:
            hint = f"write it percent-encoded ({php_rawurlencode(char)})" if char != " " else "write %20 or +"
            raise LayoutError(f"character {char!r} is not allowed in a URL; {hint}", start + index, char)
        if char == "%" and not re.match(r"%[0-9A-Fa-f]{2}", text[index : index + 3]):
            raise LayoutError("`%` must start a %XX escape; write %25 for a percent sign", start + index, "%")


def check_authority(first: str, followed_by_shortcode: bool) -> int:
    """Validate scheme + authority at the start of the first literal; return where the path starts."""
    scheme = _SCHEME.match(first)
    if scheme is None:
        raise LayoutError("a URL template must start with literal http:// or https://", 0, first[:8])
    begin = scheme.end()
    end = begin
    while end < len(first) and first[end] not in "/?#":
        end += 1
    if end == len(first) and followed_by_shortcode:
        raise LayoutError(
            "the host and port must be literal text ending with `/`, `?` or `#` before any shortcode",
            end,
            first[begin:end],
        )
    authority = first[begin:end]
    host_at = authority.rfind("@") + 1
    userinfo, hostport = authority[:host_at], authority[host_at:]
    if userinfo and _USERINFO.fullmatch(userinfo) is None:
        raise LayoutError("malformed user:password@ before the host", begin, userinfo)
    match = _HOST.fullmatch(hostport)
    if not hostport or match is None:
        raise LayoutError(f"`{hostport}` is not a valid host[:port]", begin + host_at, hostport)
    if match.group(1) is not None and int(match.group(1)) > 65535:
        raise LayoutError(
            "port must be at most 65535", begin + host_at + hostport.rfind(":") + 1, match.group(1)
        )
    return end


def advance(component: Component, text: str, start: int) -> Component:
    """The component after literal ``text``; a second ``#`` is an error (fragments hold no ``#``)."""
    for index, char in enumerate(text):
        if char == "#":
            if component == "fragment":
                raise LayoutError("a URL has one fragment: write %23 for a literal `#`", start + index, "#")
            component = "fragment"
        elif char == "?" and component == "path":
            component = "query"
    return component


def url_warnings(url: str, *, max_url_bytes: int = MAX_URL_BYTES) -> tuple[str, ...]:
    """Warnings (not errors) about a rendered URL: today only its length against common server limits."""
    size = len(url.encode("utf-8", "surrogatepass"))
    if size > max_url_bytes:
        return (f"the rendered URL is {size} bytes; many servers reject URLs over {max_url_bytes} bytes",)
    return ()
