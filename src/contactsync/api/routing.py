"""Route class of every API router: timestamps leave the API as RFC 3339 with their zone (``Z``).

The database stores naive UTC (one convention for SQLite and PostgreSQL); a naive timestamp on the
wire would be read as local time by many clients and is not a valid OpenAPI ``date-time``. Each
endpoint's result is walked once and every naive datetime is marked UTC before serialization.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel


def aware(value: Any) -> Any:
    """``value`` with every naive datetime inside (models, lists, dicts) marked as UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if isinstance(value, BaseModel):
        changed = {}
        for name in type(value).model_fields:
            before = getattr(value, name)
            after = aware(before)
            if after is not before:
                changed[name] = after
        return value.model_copy(update=changed) if changed else value
    if isinstance(value, list):
        items = [aware(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        pairs = {k: aware(v) for k, v in value.items()}
        return pairs if any(pairs[k] is not value[k] for k in value) else value
    return value


def _wrap(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            return aware(await endpoint(*args, **kwargs))

        return run_async

    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        return aware(endpoint(*args, **kwargs))

    return run


class UtcRoute(APIRoute):
    """An APIRoute whose endpoint results carry zone-aware timestamps."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, _wrap(endpoint), **kwargs)
