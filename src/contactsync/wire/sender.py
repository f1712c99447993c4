"""Which action sent a request: two headers the platform adds, for the receiver's display only.

``X-Contactsync-Action`` carries the action's id, ``X-Contactsync-Action-Name`` a readable name
(``<automation> · <action name>``, or ``· action <id>`` for an unnamed action; UTF-8 percent-encoded
so any name is a valid header value). They are NOT covered by the signature (which signs id,
timestamp and body, wire.md): a receiver shows them to say where a request claims to come from — on
a refusal too, when nothing else can — and never decides anything on them. The platform computes
them once per action, not per delivery.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, unquote

__all__ = ["HEADER_ACTION", "HEADER_ACTION_NAME", "claimed", "display_name", "headers"]

HEADER_ACTION = "X-Contactsync-Action"
HEADER_ACTION_NAME = "X-Contactsync-Action-Name"
PREFIX = "x-contactsync-"
"""Header names the platform owns (an action's own extra headers may not use them)."""
MAX_NAME = 200
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def display_name(action_id: int, automation_name: str = "", action_name: str = "") -> str:
    """How an action is named to a receiver: ``<automation> · <action name>`` (``action <id>`` when it
    has none), at most 100 characters, so it also fits a listener's secret label, which the platform
    suggests it as."""
    suffix = action_name.strip()[:60] or f"action {action_id}"
    return f"{automation_name[: 97 - len(suffix)]} · {suffix}" if automation_name else suffix


def headers(action_id: int, automation_name: str = "", action_name: str = "") -> dict[str, str]:
    """The two headers of every request of action ``action_id`` of the automation so named."""
    name = display_name(action_id, automation_name, action_name)
    return {HEADER_ACTION: str(action_id), HEADER_ACTION_NAME: quote(name, safe=_SAFE)}


def claimed(received: Mapping[str, str]) -> tuple[str, str]:
    """The (action id, readable name) a request's headers claim (lower-case names), bounded."""
    action = received.get(HEADER_ACTION.lower(), "")[:64]
    name = received.get(HEADER_ACTION_NAME.lower(), "")
    return action, unquote(name[: 3 * MAX_NAME * 4])[:MAX_NAME] if name else ""
