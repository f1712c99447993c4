"""One HTTP attempt: send the frozen request once, never follow a redirect, capture what came back.

Every way an attempt can end — a status line, a refused or reset connection, a timeout, a
blocked address — becomes an :class:`AttemptResult` the retry policy can judge; nothing the
receiver does can raise out of :func:`send`. The response body is capped (first 20 KB) so a
hostile receiver cannot make the dispatcher buffer gigabytes.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from contactsync import __version__
from contactsync.delivery.netguard import NetPolicy
from contactsync.delivery.retry import Outcome
from contactsync.errors import BlockedAddressError
from contactsync.wire import signing

MAX_RESPONSE_BODY_BYTES = 20 * 1024
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_TOTAL_TIMEOUT_S = 15.0
DEFAULT_USER_AGENT = f"contactsync/{__version__}"
CAPTURED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "location",
        "retry-after",
        "webhook-delivery",
        "server",
        "date",
        "x-request-id",
    }
)
_READ_CHUNK_BYTES = 8192


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt produced, as stored in ``delivery_attempts``."""

    outcome: Outcome
    duration_s: float
    body: bytes = b""
    body_truncated: bool = False
    detail: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def status(self) -> int | None:
        return self.outcome.status

    @property
    def error(self) -> str | None:
        return self.outcome.error


def outcome_label(result: AttemptResult) -> str:
    """The attempt's outcome in one word, as stored, counted and shown: success, http_3xx, http_4xx,
    http_5xx, gone (410: the endpoint is disabled), or the error kind when no status line came."""
    status = result.status
    if status is None:
        return result.error or "error"
    if 200 <= status < 300:
        return "success"
    return f"http_{status // 100}xx" if status != 410 else "gone"


def attempt_headers(
    *,
    method: str,
    url: str,
    body: bytes,
    content_type: str,
    static_headers: Mapping[str, str],
    transactionid: int,
    keys: Sequence[bytes | str],
    timestamp: int,
    user_agent: str,
) -> dict[str, str]:
    """The headers of one attempt (wire.md): the frozen static ones plus fresh ``webhook-*`` ones.

    Signed content is the body, or for GET the request target exactly as sent. Without a secret
    the id and timestamp are still sent (the receiver relies on its private URL then).
    """
    headers = {"User-Agent": user_agent, **static_headers}
    if method != "GET" and content_type:
        headers["Content-Type"] = content_type
    msg_id = str(transactionid)
    headers[signing.HEADER_ID] = msg_id
    headers[signing.HEADER_TIMESTAMP] = str(timestamp)
    if keys:
        content = signing.request_target(url) if method == "GET" else body
        headers[signing.HEADER_SIGNATURE] = signing.signature_header(
            keys, msg_id=msg_id, timestamp=timestamp, content=content
        )
    return headers


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, BlockedAddressError):
        return "blocked"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        return "reset"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.ClientResponseError):
        return "protocol"
    return "client"


@functools.lru_cache(maxsize=64)
def _timeout(total_s: float, connect_s: float) -> aiohttp.ClientTimeout:
    """Timeouts are per action and few: one (immutable) object each, not one per attempt."""
    return aiohttp.ClientTimeout(total=total_s, sock_connect=connect_s)


async def _read_capped(response: aiohttp.ClientResponse, limit_bytes: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while size < limit_bytes:
        chunk = await response.content.read(min(_READ_CHUNK_BYTES, limit_bytes - size))
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
        if response.content.at_eof():  # the usual short answer: no second read to learn it ended
            return b"".join(chunks), False
    return b"".join(chunks), not response.content.at_eof()


async def send(
    session: aiohttp.ClientSession,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    policy: NetPolicy,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S,
    max_body_bytes: int = MAX_RESPONSE_BODY_BYTES,
    clock: Callable[[], float] = time.monotonic,
) -> AttemptResult:
    """Send one request through ``session`` (whose connector should be a guarded one).

    A body that breaks off or stalls after the status line makes the attempt a failure (``reset``
    or ``timeout``) whatever the status said: a retry costs a duplicate the receiver drops, while
    trusting a truncated answer could lose a delivery.
    """
    started = clock()
    timeout = _timeout(total_timeout_s, connect_timeout_s)
    try:
        target = policy.check_url(url)
        async with session.request(
            method, target, headers=headers, data=body, allow_redirects=False, timeout=timeout
        ) as response:
            captured = {k.lower(): v for k, v in response.headers.items() if k.lower() in CAPTURED_HEADERS}
            outcome = Outcome(status=response.status, headers=captured)
            try:
                data, truncated = await _read_capped(response, max_body_bytes)
            except (TimeoutError, aiohttp.ClientError) as exc:
                response.close()
                kind = _error_kind(exc)
                detail = f"{kind}: HTTP {response.status}, then the body broke off: {exc!r}"
                return AttemptResult(Outcome(error=kind), clock() - started, detail=detail, headers=captured)
            if truncated:
                response.close()  # drop the connection instead of draining an unbounded body
            return AttemptResult(outcome, clock() - started, data, truncated, headers=captured)
    except (TimeoutError, aiohttp.ClientError, BlockedAddressError, OSError, ValueError) as exc:
        kind = _error_kind(exc)
        return AttemptResult(Outcome(error=kind), clock() - started, detail=f"{kind}: {exc}")


async def send_once(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    policy: NetPolicy,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S,
    guard_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AttemptResult:
    """One attempt right now, outside the outbox, on a guarded connection of its own: a test send.

    ``headers`` are complete (signed: :func:`attempt_headers`). ``guard_s`` caps the whole attempt
    should the client's own timeouts not end it; running out counts as a ``timeout`` like theirs.
    """
    from contactsync.delivery.netguard import create_connector

    started = clock()
    connector = create_connector(policy, limit=1)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        attempt = send(
            session,
            method=method,
            url=url,
            headers=headers,
            body=body,
            policy=policy,
            connect_timeout_s=connect_timeout_s,
            total_timeout_s=total_timeout_s,
            clock=clock,
        )
        try:
            return await asyncio.wait_for(attempt, guard_s)
        except TimeoutError:
            detail = f"timeout: no answer within {guard_s:g} s"
            return AttemptResult(Outcome(error="timeout"), clock() - started, detail=detail)
