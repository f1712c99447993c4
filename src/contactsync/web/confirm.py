"""One confirmation page for every risky button: what will happen, with its count, and "yes" or "back".

A risky form posted without ``confirm=yes`` is answered by this page (nothing changed, nothing
audited); its "yes" posts the same form again with ``confirm=yes``. Without JavaScript it works the
same, and a script cannot skip it by accident.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from contactsync.web.app import Web
from contactsync.web.security import Session


@dataclass(frozen=True, slots=True)
class Ask:
    """A question before a change: ``says`` (the first line carries the count) and where "yes" posts."""

    title: str
    says: tuple[str, ...]
    action: str
    button: str
    back: str
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
    danger: bool = False


def confirmed(form: object) -> bool:
    """True when the form is the confirmation page's "yes"."""
    get = getattr(form, "get", None)
    return callable(get) and get("confirm") == "yes"


def ask(web: Web, request: Request, session: Session, question: Ask) -> Response:
    """The confirmation page for ``question``."""
    return web.render(request, session, "platform/confirm.html", q=question)
