"""Dates for ``DATE``, ``DATEADD`` and ``NOW``: lenient parsing, a locale-free strftime.

Contact dates arrive as ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM:SS`` or ISO 8601 text. Formatting
does not call :meth:`datetime.strftime`: its output depends on the C library and the process
locale, and it silently passes unknown directives through. Our own formatter is compiled once
per ``DATE`` argument, rejects unknown directives at save time and prints English names, so a
rendered URL is the same on every machine.

Every run-time function here returns ``""`` for a value it cannot read instead of raising.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

Formatter = Callable[[datetime], str]

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def _offset(d: datetime) -> str:
    delta = d.utcoffset()
    if delta is None:
        return ""
    minutes = int(delta.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def _hour12(d: datetime) -> int:
    return d.hour % 12 or 12


# directive → (value, zero-padded width); width 0 means "text, no padding"
_NUMERIC: dict[str, tuple[Callable[[datetime], int], int]] = {
    "Y": (lambda d: d.year, 4),
    "y": (lambda d: d.year % 100, 2),
    "m": (lambda d: d.month, 2),
    "d": (lambda d: d.day, 2),
    "H": (lambda d: d.hour, 2),
    "I": (_hour12, 2),
    "M": (lambda d: d.minute, 2),
    "S": (lambda d: d.second, 2),
    "f": (lambda d: d.microsecond, 6),
    "j": (lambda d: d.timetuple().tm_yday, 3),
    "u": (lambda d: d.isoweekday(), 1),
    "w": (lambda d: d.isoweekday() % 7, 1),
    "G": (lambda d: d.isocalendar()[0], 4),
    "V": (lambda d: d.isocalendar()[1], 2),
}
_TEXT: dict[str, Callable[[datetime], str]] = {
    "a": lambda d: _DAYS[d.weekday()][:3],
    "A": lambda d: _DAYS[d.weekday()],
    "b": lambda d: _MONTHS[d.month - 1][:3],
    "B": lambda d: _MONTHS[d.month - 1],
    "p": lambda d: "AM" if d.hour < 12 else "PM",
    "z": _offset,
    "%": lambda d: "%",
}
_ALIASES = {"F": "%Y-%m-%d", "T": "%H:%M:%S", "D": "%m/%d/%y", "R": "%H:%M", "h": "%b"}
DIRECTIVES = " ".join(
    "%" + c
    for c in sorted(set(_NUMERIC) | set(_TEXT) | set(_ALIASES), key=lambda c: (c.lower(), c.isupper()))
)


class FormatSyntaxError(ValueError):
    """A strftime format we do not support; ``index`` is the offending ``%`` in the format."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def compile_format(fmt: str) -> Formatter:
    """Compile a strftime format (``%Y-%m-%d``, ``%-d %B %Y``); raise FormatSyntaxError on junk.

    Supported: ``%Y %y %m %d %H %I %M %S %f %j %u %w %G %V %a %A %b %B %p %z %%`` and the shorthands
    ``%F %T %D %R %h``; ``-`` after ``%`` drops the zero padding of a number (``%-d`` → ``7``).
    """
    parts: list[str | Formatter] = []
    i = 0
    while i < len(fmt):
        pct = fmt.find("%", i)
        if pct < 0:
            parts.append(fmt[i:])
            break
        if pct > i:
            parts.append(fmt[i:pct])
        j = pct + 1
        unpadded = fmt[j : j + 1] == "-"
        if unpadded:
            j += 1
        code = fmt[j : j + 1]
        if code in _ALIASES and not unpadded:
            parts.append(compile_format(_ALIASES[code]))
        elif code in _NUMERIC:
            value, width = _NUMERIC[code]
            parts.append(_number(value, 1 if unpadded else width))
        elif code in _TEXT and not unpadded:
            parts.append(_TEXT[code])
        else:
            shown = fmt[pct : j + 1]
            if not code:
                raise FormatSyntaxError("a date format cannot end with a lone `%` (write `%%`)", pct)
            raise FormatSyntaxError(
                f"unknown date directive `{shown}` (supported: {DIRECTIVES}, and %-d style for no padding)",
                pct,
            )
        i = j + 1
    frozen = tuple(parts)

    def format_date(d: datetime) -> str:
        return "".join([p if isinstance(p, str) else p(d) for p in frozen])

    return format_date


def _number(value: Callable[[datetime], int], width: int) -> Formatter:
    def fmt(d: datetime) -> str:
        return str(value(d)).zfill(width)

    return fmt


_SPACED = compile_format("%Y-%m-%d %H:%M:%S")


def parse_date(text: str) -> tuple[datetime, str] | None:
    """Read a contact date; return it with its shape (``date``/``space``/``iso``/``isoz``) or None."""
    text = text.strip()
    if not text or len(text) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if len(text) == 10 and text[4] == "-":
        shape = "date"
    elif "T" in text or "t" in text:
        shape = "isoz" if text[-1] in "Zz" else "iso"
    else:
        shape = "space"
    return parsed, shape


def format_like(d: datetime, shape: str) -> str:
    """Print ``d`` in the same shape it was read in, so DATEADD keeps a column's format."""
    if shape == "date":
        return date(d.year, d.month, d.day).isoformat()
    if shape == "space":
        return _SPACED(d) if not d.microsecond else d.isoformat(" ")
    text = d.isoformat()
    if shape == "isoz" and text.endswith("+00:00"):
        return text[:-6] + "Z"
    return text


def reformat(text: str, formatter: Formatter) -> str:
    """``DATE``: the value re-printed with ``formatter``; ``""`` when it is not a date."""
    parsed = parse_date(text)
    return "" if parsed is None else formatter(parsed[0])


def shift(text: str, days: int) -> str:
    """``DATEADD``: the date moved by ``days``, same shape; ``""`` when unreadable or out of range."""
    parsed = parse_date(text)
    if parsed is None:
        return ""
    try:
        moved = parsed[0] + timedelta(days=days)
    except OverflowError:
        return ""
    return format_like(moved, parsed[1])


def now_text(now: datetime) -> str:
    """The ``NOW`` field: render time in UTC as ``YYYY-MM-DD HH:MM:SS`` (naive means UTC)."""
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    return _SPACED(now)
