"""Jinja2 filters of the admin UI: times, sizes, bodies. Pure functions of their input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment


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


def install(env: Environment) -> None:
    env.filters["when"] = when
    env.filters["size"] = size
    env.filters["body_text"] = body_text
    env.filters["pretty"] = pretty
