"""JSON bodies under the form path's rules: the same variable and nesting limits, and real Unicode text.

:mod:`~contactsync.wire.phpform` holds a form body to PHP's ``max_input_vars`` and
``max_input_nesting_level`` while it decodes. JSON is decoded by :func:`json.loads`, so the same
limits are checked on the tree it returns, counted so that they mean the same in both encodings:

* a *variable* is a leaf — a scalar, or an empty array or object — as ``contact[id]=1`` is one;
  a JSON body is a POST body, so like a form POST it may hold ``max_input_vars + 1`` of them
  (PHP registers a POST variable before it counts it);
* the *nesting level* of a leaf is the number of arrays or objects between it and the top-level
  object, as PHP counts the brackets of ``fields[0][id]`` (level 2).

The walk looks at containers only, and counts leaves only when the body is long enough to hold
more of them than allowed (each leaf takes a byte and a separator), so a normal payload costs a
few microseconds on top of ``json.loads``.

``json.loads`` also accepts ``"\\ud800"``: a lone UTF-16 surrogate, which is no character, cannot be
encoded as UTF-8, and breaks whatever stores or shows it. :func:`lone_surrogate` finds one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from contactsync.errors import PHPFormLimitError

__all__ = ["check_limits", "lone_surrogate", "too_deep"]

_CONTAINERS = frozenset((dict, list))
_PATH_CHARS = 200
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class _Over(Exception):
    """Raised inside the walk; collects the keys of the offending path while unwinding."""

    def __init__(self, limit: str, value: int) -> None:
        super().__init__(limit)
        self.limit = limit
        self.value = value
        self.keys: list[object] = []


def path_of(keys: Iterable[object]) -> str:
    """Keys from the top as the listener names them elsewhere: ``links-clicked[0].url``."""
    out = ""
    for key in keys:
        if type(key) is int:
            out += f"[{key}]"
        else:
            text = str(key)
            if not text.isascii():  # a lone surrogate is shown as its escape, never carried along
                text = text.encode("utf-8", "backslashreplace").decode("utf-8")
            out += f".{text}" if out else text
    return out if len(out) <= _PATH_CHARS else out[:_PATH_CHARS] + "…"


def _nest(node: Any, level: int, max_nesting: int) -> None:
    """Raise when a non-empty container sits deeper than ``max_nesting``; looks at containers only."""
    for value in node.values() if type(node) is dict else node:
        if type(value) in _CONTAINERS and value:
            if level >= max_nesting:
                raise _Over("max_input_nesting_level", level + 1)
            _nest(value, level + 1, max_nesting)


def _leaves(node: Any) -> int:
    total = 0
    for value in node.values() if type(node) is dict else node:
        total += _leaves(value) if type(value) in _CONTAINERS and value else 1
    return total


def _first_leaf_depth(node: Any, depth: int) -> int:
    """Depth of the first leaf of ``node`` in document order (the first variable PHP would refuse)."""
    while True:
        first = next(iter(node.values() if type(node) is dict else node))
        if not (type(first) in _CONTAINERS and first):
            return depth
        node, depth = first, depth + 1


def _locate(node: Any, over: _Over, level: int, max_nesting: int, budget: list[int]) -> bool:
    """Walk in document order to the key where the limit is passed, collecting it (the rare path)."""
    items = node.items() if type(node) is dict else enumerate(node)
    for key, value in items:
        if type(value) in _CONTAINERS and value:
            if level >= max_nesting:
                over.value = _first_leaf_depth(value, level + 1)
                over.keys.append(key)
                return True
            if _locate(value, over, level + 1, max_nesting, budget):
                over.keys.append(key)
                return True
        else:
            budget[0] -= 1
            if budget[0] == 0:
                over.keys.append(key)
                return True
    return False


def check_limits(tree: dict[str, Any], *, size_bytes: int, max_input_vars: int, max_nesting: int) -> None:
    """Raise :class:`PHPFormLimitError` (naming the key) when ``tree`` breaks a form limit.

    The variable count is checked first, as PHP does. ``size_bytes`` is the length of the body
    ``tree`` came from: a body of n bytes holds at most (n + 1) / 2 leaves, so a short body cannot
    hold too many, and only its nesting is checked.
    """
    kept = max_input_vars + 1  # as a form POST keeps (phpform._kept)
    try:
        variables = _leaves(tree) if (size_bytes + 1) // 2 > kept else 0
        if variables > kept:
            over = _Over("max_input_vars", variables)
            _locate(tree, over, 0, 1 << 62, [kept + 1])
            path = path_of(reversed(over.keys))
            raise PHPFormLimitError(
                f"the JSON body has {variables} variables (leaf values); PHP's max_input_vars="
                f"{max_input_vars} keeps {kept} (POST), and {path} is the first one over",
                limit="max_input_vars",
                value=variables,
                maximum=max_input_vars,
                path=path,
            )
        _nest(tree, 0, max_nesting)
    except RecursionError:  # a raised recursion limit let json.loads build more than we can walk
        raise PHPFormLimitError(
            f"the JSON body nests deeper than PHP's max_input_nesting_level={max_nesting}",
            limit="max_input_nesting_level",
            value=max_nesting + 1,
            maximum=max_nesting,
        ) from None
    except _Over as over:
        _locate(tree, over, 0, max_nesting, [1 << 62])
        path = path_of(reversed(over.keys))
        raise PHPFormLimitError(
            f"{path} nests {over.value} levels, more than max_input_nesting_level={max_nesting}",
            limit="max_input_nesting_level",
            value=over.value,
            maximum=max_nesting,
            path=path,
        ) from None


def too_deep(body: bytes, *, max_nesting: int) -> PHPFormLimitError:
    """The error for a body :func:`json.loads` gave up on (``RecursionError``): how deep it goes."""
    depth = level = 0
    for token in _TOKENS.finditer(body):
        first = token.group()[:1]
        if first in (b"[", b"{"):
            level += 1
            depth = max(depth, level)
        elif first in (b"]", b"}"):
            level -= 1
    nesting = max(depth - 1, max_nesting + 1)  # the top-level object is level 0
    return PHPFormLimitError(
        f"the JSON body nests {nesting} levels, more than max_input_nesting_level={max_nesting}",
        limit="max_input_nesting_level",
        value=nesting,
        maximum=max_nesting,
    )


def lone_surrogate(tree: Any, body: bytes) -> str | None:
    """The path of the first key or string value holding a lone UTF-16 surrogate, if any.

    Only a ``\\uD800``–``\\uDFFF`` escape in ``body`` can produce one (raw bytes that encode a
    surrogate are not UTF-8), so a body without such an escape is not walked. Escaped pairs, as
    ``json_encode`` and ``json.dumps`` write emoji, decode to one character and are fine.
    """
    if _SURROGATE_ESCAPE.search(body) is None:
        return None
    keys: list[object] = []
    return path_of(reversed(keys)) if _find_surrogate(tree, keys) else None


def _broken(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _find_surrogate(node: Any, keys: list[object]) -> bool:
    if type(node) is str:
        return _broken(node)
    if type(node) is dict:
        for key, value in node.items():
            if _broken(key) or _find_surrogate(value, keys):
                keys.append(key)
                return True
    elif type(node) is list:
        for index, value in enumerate(node):
            if _find_surrogate(value, keys):
                keys.append(index)
                return True
    return False
