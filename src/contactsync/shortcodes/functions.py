"""The function library as one registry: name → parameters, doc, examples and implementation.

Validation, error messages, the UI's shortcode picker and ``docs/shortcodes.md`` all read
:data:`FUNCTIONS`, so they cannot disagree. A function's ``make`` runs once at compile time with
checked arguments and returns a ``str → str`` step; rendering only calls steps.

Run-time rules shared by every function: a step never raises, and *empty in, empty out* — every
function but ``DEFAULT`` maps ``""`` to ``""`` (no digest of nothing, no prefix on nothing), and a
value a function cannot read (``DATE`` of ``soon``, ``NUMBER`` of ``n/a``) becomes ``""`` too, so
``DEFAULT`` placed to its left can supply a fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from contactsync.shortcodes import datetimes, normalizers, textops

Step = Callable[[str], str]
ParamKind = Literal["int", "text", "date_format", "country_code"]


@dataclass(frozen=True, slots=True)
class Options:
    """Compile-time settings a function may read (e.g. the default phone country code)."""

    default_country_code: str = "1"


@dataclass(frozen=True, slots=True)
class Param:
    """One ``:arg`` of a function; ``default`` None means required.

    ``minimum``/``maximum`` bound an ``int``; for ``text`` the ``minimum`` is the least length
    (``REPLACE:"":"x"`` would insert between every character, so it is refused at save time).
    """

    name: str
    kind: ParamKind
    default: str | int | None = None
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True, slots=True)
class Example:
    """``shortcode`` rendered (without URL encoding) with its one field set to ``value``."""

    shortcode: str
    value: str
    result: str


@dataclass(frozen=True, slots=True)
class Function:
    """A registry entry; ``make(args, options)`` returns the step for checked ``args``."""

    name: str
    params: tuple[Param, ...]
    doc: str
    examples: tuple[Example, ...]
    make: Callable[[Sequence[object], Options], Step]
    raw: bool = False

    @property
    def signature(self) -> str:
        """``MID:start:len``, ``TRUNCATE:n[:end]`` — how the function is written."""
        out = self.name
        for p in self.params:
            out += f"[:{p.name}]" if p.default is not None else f":{p.name}"
        return out

    @property
    def required(self) -> int:
        return sum(1 for p in self.params if p.default is None)


def _unary(fn: Step) -> Callable[[Sequence[object], Options], Step]:
    """A no-argument function that keeps empty values empty."""

    def make(args: Sequence[object], options: Options) -> Step:
        def step(value: str) -> str:
            return fn(value) if value else ""

        return step

    return make


def _left(args: Sequence[object], options: Options) -> Step:
    n = int(str(args[0]))
    return lambda value: value[:n]


def _right(args: Sequence[object], options: Options) -> Step:
    n = int(str(args[0]))
    return lambda value: value[-n:] if n else ""


def _mid(args: Sequence[object], options: Options) -> Step:
    start, length = int(str(args[0])) - 1, int(str(args[1]))
    return lambda value: value[start : start + length]


def _truncate(args: Sequence[object], options: Options) -> Step:
    n, end = int(str(args[0])), str(args[1])
    keep = n - len(end)

    def step(value: str) -> str:
        if len(value) <= n:
            return value
        return value[:keep] + end if keep > 0 else value[:n]

    return step


def _default(args: Sequence[object], options: Options) -> Step:
    text = str(args[0])
    return lambda value: value or text


def _prefix(args: Sequence[object], options: Options) -> Step:
    text = str(args[0])
    return lambda value: text + value if value else ""


def _suffix(args: Sequence[object], options: Options) -> Step:
    text = str(args[0])
    return lambda value: value + text if value else ""


def _replace(args: Sequence[object], options: Options) -> Step:
    old, new = str(args[0]), str(args[1])
    return lambda value: value.replace(old, new)


def _remove(args: Sequence[object], options: Options) -> Step:
    old = str(args[0])
    return lambda value: value.replace(old, "")


def _date(args: Sequence[object], options: Options) -> Step:
    formatter = datetimes.compile_format(str(args[0]))
    return lambda value: datetimes.reformat(value, formatter) if value else ""


def _dateadd(args: Sequence[object], options: Options) -> Step:
    days = int(str(args[0]))
    return lambda value: datetimes.shift(value, days) if value else ""


def _number(args: Sequence[object], options: Options) -> Step:
    places = int(str(args[0]))
    return lambda value: textops.fixed_decimals(value, places)


def _phone(args: Sequence[object], options: Options) -> Step:
    cc = str(args[0]) if args[0] != "" else options.default_country_code
    return lambda value: normalizers.phone_e164(value, cc)


def _hash_phone(args: Sequence[object], options: Options) -> Step:
    cc = str(args[0]) if args[0] != "" else options.default_country_code
    return lambda value: normalizers.hash_phone(value, cc)


def _identity(args: Sequence[object], options: Options) -> Step:
    return lambda value: value


def _fn(
    name: str,
    params: tuple[Param, ...],
    doc: str,
    examples: Sequence[tuple[str, str, str]],
    make: Callable[[Sequence[object], Options], Step],
    *,
    raw: bool = False,
) -> Function:
    return Function(name, params, doc, tuple(Example(*e) for e in examples), make, raw)


_N = Param("n", "int", minimum=0, maximum=100_000)
_TEXT = Param("text", "text")
_CC = Param("cc", "country_code", default="")

_LIBRARY: tuple[Function, ...] = (
    _fn("UPPER", (), "Upper-case.", [("[#UPPER FIRST_NAME#]", "Jean-Luc", "JEAN-LUC")], _unary(str.upper)),
    _fn(
        "LOWER", (), "Lower-case.", [("[#LOWER EMAIL#]", "Jane@ACME.com", "jane@acme.com")], _unary(str.lower)
    ),
    _fn(
        "PROPER",
        (),
        "Spreadsheet PROPER: lower-case all, then upper-case every letter that follows a non-letter "
        "or starts the text.",
        [
            ("[#PROPER NAME#]", "jean-luc o'neil", "Jean-Luc O'Neil"),
            ("[#PROPER EMAIL/2#]", "jane.doe@ACME.com", "Acme.Com"),
        ],
        _unary(textops.proper),
    ),
    _fn(
        "CAPITALIZE",
        (),
        "First character upper-cased, the rest lower-cased.",
        [("[#CAPITALIZE CITY#]", "nEW yORK", "New york")],
        _unary(str.capitalize),
    ),
    _fn(
        "TRIM", (), "Strip whitespace at both ends.", [("[#TRIM NAME#]", "  Ann  ", "Ann")], _unary(str.strip)
    ),
    _fn(
        "SQUISH",
        (),
        "Strip both ends and collapse inner whitespace runs to one space.",
        [("[#SQUISH NAME#]", " Ann \n  Lee ", "Ann Lee")],
        _unary(textops.squish),
    ),
    _fn(
        "LEFT",
        (_N,),
        "The first n characters (characters, not bytes).",
        [("[#LEFT:3 FIRST_NAME#]", "Zoë-Ann", "Zoë")],
        _left,
    ),
    _fn("RIGHT", (_N,), "The last n characters.", [("[#RIGHT:4 PHONE#]", "+1 650 555 1212", "1212")], _right),
    _fn(
        "MID",
        (Param("start", "int", minimum=1, maximum=100_000), Param("len", "int", minimum=0, maximum=100_000)),
        "len characters from position start (1-based).",
        [("[#MID:2:3 CODE#]", "ABCDEF", "BCD")],
        _mid,
    ),
    _fn(
        "TRUNCATE",
        (_N, Param("end", "text", default="…")),
        "At most n characters, ending with end (default `…`) when cut; if n is not longer than end, "
        "a plain cut.",
        [
            ("[#TRUNCATE:8 TITLE#]", "Chief Executive", "Chief E…"),
            ('[#TRUNCATE:8:"..." TITLE#]', "Chief Executive", "Chief..."),
        ],
        _truncate,
    ),
    _fn(
        "DEFAULT",
        (_TEXT,),
        "text when the value is empty (the only function that turns empty into text).",
        [('[#DEFAULT:"unknown" CITY#]', "", "unknown")],
        _default,
    ),
    _fn(
        "PREFIX",
        (_TEXT,),
        "Prepend text, only when the value is non-empty.",
        [('[#PREFIX:"+" PHONE#]', "16505551212", "+16505551212")],
        _prefix,
    ),
    _fn(
        "SUFFIX",
        (_TEXT,),
        "Append text, only when the value is non-empty.",
        [('[#SUFFIX:" Ltd" COMPANY#]', "Acme", "Acme Ltd")],
        _suffix,
    ),
    _fn(
        "REPLACE",
        (Param("from", "text", minimum=1), Param("to", "text")),
        "Replace every literal from by to.",
        [('[#REPLACE:"-":"" PHONE#]', "650-555-1212", "6505551212")],
        _replace,
    ),
    _fn(
        "REMOVE",
        (Param("text", "text", minimum=1),),
        "Remove every literal occurrence of text.",
        [('[#REMOVE:" " POSTCODE#]', "SW1A 1AA", "SW1A1AA")],
        _remove,
    ),
    _fn(
        "DATE",
        (Param("format", "date_format"),),
        "Reformat a date (`YYYY-MM-DD[ HH:MM:SS]` or ISO 8601) with a strftime format; English names, "
        'no locale; `""` when the value is not a date.',
        [
            ('[#DATE:"%d/%m/%Y" CREATED_AT#]', "2026-03-07 14:05:00", "07/03/2026"),
            ('[#DATE:"%-d %B %Y" CREATED_AT#]', "2026-03-07", "7 March 2026"),
        ],
        _date,
    ),
    _fn(
        "DATEADD",
        (Param("days", "int", minimum=-3_660_000, maximum=3_660_000),),
        'Shift a date by days (negative goes back), keeping its format; `""` when the value is not a date.',
        [
            ("[#DATEADD:30 CREATED_AT#]", "2026-01-15", "2026-02-14"),
            ("[#DATEADD:-1 CREATED_AT#]", "2026-03-01 08:00:00", "2026-02-28 08:00:00"),
        ],
        _dateadd,
    ),
    _fn(
        "NUMBER",
        (Param("decimals", "int", minimum=0, maximum=20),),
        'Fixed decimals with `.` separator, half rounded away from zero; `""` when not a number.',
        [("[#NUMBER:2 LEAD_SCORE#]", "12.345", "12.35"), ("[#NUMBER:0 LEAD_SCORE#]", "-2.5", "-3")],
        _number,
    ),
    _fn(
        "MD5",
        (),
        "Lower-case hex MD5 of the UTF-8 value.",
        [("[#MD5 EMAIL#]", "jane@acme.com", normalizers.md5("jane@acme.com"))],
        _unary(normalizers.md5),
    ),
    _fn(
        "SHA1",
        (),
        "Lower-case hex SHA-1 of the UTF-8 value.",
        [("[#SHA1 EMAIL#]", "jane@acme.com", normalizers.sha1("jane@acme.com"))],
        _unary(normalizers.sha1),
    ),
    _fn(
        "SHA256",
        (),
        "Lower-case hex SHA-256 of the UTF-8 value.",
        [("[#SHA256 EMAIL#]", "jane@acme.com", normalizers.sha256("jane@acme.com"))],
        _unary(normalizers.sha256),
    ),
    _fn(
        "SHA512",
        (),
        "Lower-case hex SHA-512 of the UTF-8 value.",
        [("[#SHA512 ID#]", "42", normalizers.sha512("42"))],
        _unary(normalizers.sha512),
    ),
    _fn(
        "BASE64",
        (),
        "Standard base64 of the UTF-8 value, with `=` padding.",
        [("[#BASE64 NAME#]", "Zoë", "Wm/Dqw==")],
        _unary(normalizers.b64),
    ),
    _fn(
        "BASE64URL",
        (),
        "URL-safe base64 (`-` and `_`) of the UTF-8 value, without padding.",
        [("[#BASE64URL NAME#]", "Zoë", "Wm_Dqw")],
        _unary(normalizers.b64url),
    ),
    _fn(
        "EMAIL_NORMALIZE",
        (),
        "Trim and lower-case.",
        [("[#EMAIL_NORMALIZE EMAIL#]", " Jane@ACME.com ", "jane@acme.com")],
        _unary(normalizers.email_normalize),
    ),
    _fn(
        "PHONE_E164",
        (_CC,),
        "E.164 digits without `+`: numbers starting with `+` or `00` are kept, national numbers lose "
        "trunk zeros and gain cc (default: the platform's default country code).",
        [
            ("[#PHONE_E164 PHONE#]", "(650) 555-1212", "16505551212"),
            ("[#PHONE_E164:44 PHONE#]", "07911 123456", "447911123456"),
        ],
        _phone,
    ),
    _fn(
        "HASH_EMAIL",
        (),
        "SHA-256 hex of the normalized (trimmed, lower-cased) email, for audience matching.",
        [("[#HASH_EMAIL EMAIL#]", " User@Example.com", normalizers.hash_email("user@example.com"))],
        _unary(normalizers.hash_email),
    ),
    _fn(
        "HASH_PHONE",
        (_CC,),
        "SHA-256 hex of the E.164 digits (no `+`), for audience matching.",
        [("[#HASH_PHONE PHONE#]", "+1 (650) 555-1212", normalizers.hash_phone("+16505551212", "1"))],
        _hash_phone,
    ),
    _fn(
        "RAW",
        (),
        "Do not percent-encode this value (characters that would break the URL are still "
        'encoded: controls, spaces, non-ASCII, `"<>\\^`{|}`, `#` and a `%` not followed by two hex digits).',
        [("[#RAW QUERY#]", "a=1&b=2", "a=1&b=2")],
        _identity,
        raw=True,
    ),
)

FUNCTIONS: dict[str, Function] = {f.name: f for f in _LIBRARY}
