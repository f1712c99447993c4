"""Jinja2 filters of the admin UI: times, sizes, bodies, codes in words. Pure functions of their input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from jinja2 import Environment

from contactsync.automation.action_settings import action_label
from contactsync.delivery.hints import hint

WORDS = {
    # delivery states
    "pending": "waiting",
    "in_flight": "sending",
    "delivered": "delivered",
    "failed": "failed (gave up)",
    "cancelled": "cancelled",
    # attempt outcomes
    "success": "delivered",
    "http_4xx": "refused (4xx)",
    "http_5xx": "server error (5xx)",
    "gone": "gone (410): endpoint disabled",
    "timeout": "timed out",
    "connect": "could not connect",
    "tls": "TLS error",
    "unsigned": "not sent: no secret to sign with",
    # manual runs
    "running": "running",
    "completed": "finished",
    # endpoint events
    "disabled": "turned off",
    "auto_disabled": "turned off automatically",
    "enabled": "turned back on",
    # listener handler runs
    "done": "done",
}
"""Stored codes as a person reads them; a code not listed shows as it is."""
MAX_FIELDS = 2000


def when(value: datetime | int | float | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` UTC for a naive-UTC datetime or Unix milliseconds; ``—`` for nothing."""
    if value is None:
        return "—"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value / 1000, UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def size(n: int | None) -> str:
    """Bytes for humans (1 KB = 1024 B)."""
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def body_text(raw: bytes | str | None, limit: int = 200_000) -> str:
    """A stored body as text for a ``<pre>``: UTF-8 where it is, Latin-1 bytes otherwise, capped."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw[:limit]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text[:limit] + ("\n… (truncated)" if len(text) > limit else "")


def pretty(value: Any) -> str:
    """Indented JSON of any JSON-able value (dicts, lists, models already dumped)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def words(code: str | None) -> str:
    return WORDS.get(code or "", code or "")


def failure_words(status: int | None, last_error: str | None) -> str:
    """A delivery's latest failure as a short phrase ("could not connect", "refused with HTTP 401");
    :func:`failure_hint` says what to do about it."""
    if status is not None:
        if 400 <= status < 500:
            return f"refused with HTTP {status}"
        if status >= 500:
            return f"server error (HTTP {status})"
        return last_error or f"HTTP {status}"
    kind = (last_error or "").removeprefix("error: ")
    return WORDS.get(kind, kind or "failed")


def failure_hint(status: int | None, last_error: str | None) -> str:
    """What that failure usually means and what to do, in a sentence."""
    return hint(status, (last_error or "").removeprefix("error: "), panel="the action's page")


def body_fields(raw: bytes | str | None, content_type: str = "", url: str = "") -> list[tuple[str, str]]:
    """A request's data as (key, value) rows: a form body's pairs, a JSON body's leaves by path, or
    a GET URL's query; what cannot be read that way gives no rows (the raw view still shows it)."""
    text = body_text(raw)
    if "json" in content_type:
        try:
            return _leaves(json.loads(text), "")[:MAX_FIELDS]
        except ValueError:
            return []
    if "form" in content_type:
        return parse_qsl("&".join(text.split("&", MAX_FIELDS)[:MAX_FIELDS]), keep_blank_values=True)
    if not text and "?" in url:
        return parse_qsl(urlsplit(url).query, keep_blank_values=True)[:MAX_FIELDS]
    return []


def _leaves(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _leaves(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [row for i, v in enumerate(value) for row in _leaves(v, f"{path}[{i}]")]
    return [(path, "" if value is None else str(value))]


def install(env: Environment) -> None:
    env.filters["words"] = words
    env.globals["failure_words"] = failure_words
    env.globals["failure_hint"] = failure_hint
    env.filters["body_fields"] = body_fields
    env.globals["action_label"] = action_label
    env.filters["when"] = when
    env.filters["size"] = size
    env.filters["body_text"] = body_text
    env.filters["pretty"] = pretty
