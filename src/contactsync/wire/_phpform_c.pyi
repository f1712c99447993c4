"""Types of the C accelerator of :mod:`contactsync.wire.phpform` (``_phpform_c.c``)."""

from collections.abc import Callable
from typing import Any

def encode(data: object, rfc3986: bool, php_float: Callable[[float], str], /) -> str | None: ...
def decode(
    body: str | bytes, source: str, max_input_vars: int, max_nesting: int, on_limit: str, /
) -> dict[str | int, Any] | None: ...
