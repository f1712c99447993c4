"""A test send's result in words: what went wrong and what to do about it, for people, not logs.

One pure function of what an attempt produced (status, error kind, detail, response body), used by
the API's and the admin UI's test send, which return the raw detail beside it.
"""

from __future__ import annotations

import json

__all__ = ["hint"]

_SECRET_UNKNOWN = (
    "The listener does not know this action's secret — add it under Secrets on the listener "
    "(copy it from “Connect your listener” on {panel})."
)
SECRET_UNKNOWN = _SECRET_UNKNOWN.format(panel="this page")
ACTION_PAGE = "the action's page in the admin UI"
"""Where the pairing panel is, for a hint read outside that page (the REST API's test send)."""


def _reason(body: str) -> str:
    """The ``reason`` of a contactsync listener's JSON refusal, if the body is one."""
    try:
        data = json.loads(body[:4096])
    except ValueError:
        return ""
    reason = data.get("reason", "") if isinstance(data, dict) else ""
    return reason if isinstance(reason, str) else ""


def _network(error: str, detail: str) -> str:
    low = detail.lower()
    if error == "timeout":
        return (
            "The listener did not answer in time — is it running, and reachable from the platform "
            "(firewall, private network)? A slow listener should answer before handling the data."
        )
    # aiohttp writes "ssl:default" into every connection error: only these mark a TLS failure
    if any(mark in low for mark in ("certificate", "[ssl", "sslerror", "ssl handshake", "tls")):
        return (
            "The secure (https) connection failed: the listener's certificate is not trusted, expired, or "
            "made out for another host name — use a valid certificate, or the host name it names."
        )
    if "name or service not known" in low or "nodename" in low or "name resolution" in low or "dns" in low:
        return "The host name in the URL does not resolve — check it for typos."
    if "refused" in low or error == "connect":
        return (
            "Nothing accepts connections at that address and port (connection refused) — is the listener "
            "running, and is the port in the URL the one it listens on?"
        )
    if error == "blocked":
        return (
            "The platform does not send to this address (private or reserved networks are blocked) — "
            "use the listener's public address, or ask the operator to allow its network."
        )
    if error == "reset":
        return (
            "The connection was cut before a full answer — the listener or a proxy in front of it closed it."
        )
    return (
        "The request could not be completed: the answer was not valid HTTP — check the URL's scheme and port."
    )


def hint(
    status: int | None,
    error: str | None = None,
    *,
    detail: str = "",
    body: str = "",
    panel: str = "this page",
) -> str:
    """What a test send's outcome means in plain words (``status`` None: it never got an answer);
    ``panel`` says where the action's "Connect your listener" panel is, seen from where this is read."""
    if status is None:
        return _network(error or "", detail)
    if 200 <= status < 300:
        return "The listener accepted the request: this action and the listener are paired."
    if status == 401:
        reason = _reason(body)
        if reason in ("too_old", "too_new"):
            return (
                "The listener refused the signature's time: the clocks of the platform and the listener "
                "differ by more than it allows — set the listener's clock right (NTP)."
            )
        if reason == "missing_header":
            return (
                "The request reached something that expects signature headers it did not get — check the URL."
            )
        return _SECRET_UNKNOWN.format(panel=panel)
    if status == 403:
        return (
            "The listener (or a firewall in front of it) refuses this sender — allow the platform's address."
        )
    if status == 404:
        return (
            "Nothing is at that path: the URL is wrong — copy the listener's full private URL "
            "(…/sync/<token>) again."
        )
    if status == 405:
        return "The listener does not accept this method — choose POST or GET as the listener expects."
    if status == 410:
        return "The listener says this endpoint is gone for good: deliveries to it stop."
    if status == 413:
        return (
            "The body is too large for the listener — send fewer sections or items, or raise its body or "
            "variable limit."
        )
    if status == 415:
        return "The listener does not accept this content type — switch between form and JSON."
    if status in (400, 422):
        return (
            "The listener could not read the request (not a contact sync it understands) — "
            "see its answer below."
        )
    if status == 429:
        return "The listener asks to slow down (too many requests); deliveries retry later."
    if 300 <= status < 400:
        return "The URL redirects, and redirects are never followed — use the address it redirects to."
    if status >= 500:
        return (
            "The listener failed while handling the request (server error) — check its logs; deliveries "
            "retry on their schedule."
        )
    return f"The listener refused the request with HTTP {status} — see its answer below."
