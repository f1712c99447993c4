"""The retry policy: what happens after one attempt, as a pure function of the attempt's outcome.

Time and randomness are parameters so that a test can replay the whole 27.5 h schedule in
microseconds; the dispatcher passes the wall clock and a ``random.Random``. Delays follow
delivery.md: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, each ±20 % jitter.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol

DEFAULT_SCHEDULE_S: tuple[float, ...] = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""Delay before attempt 1, 2, … 8 (seconds); the first attempt is immediate."""

JITTER_FRACTION = 0.2
THROTTLE_STATUSES = frozenset({429, 503})
THROTTLE_MIN_DELAY_S = 60.0
ABORT_HEADER = "webhook-delivery"
ABORT_VALUE = "abort"


class Rng(Protocol):
    """The part of ``random.Random`` the policy needs."""

    def uniform(self, a: float, b: float) -> float: ...


class Verdict(enum.StrEnum):
    """What the outbox does with the delivery; the values are the delivery states they lead to."""

    DELIVERED = "delivered"
    RETRY = "pending"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt produced: a response status and headers, or a transport error.

    ``headers`` keys are lower-case. ``error`` names a transport failure ("timeout",
    "connect", "reset", "blocked", …) and is ``None`` whenever a status line arrived.
    """

    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one attempt, and when the next one is due (only for ``RETRY``)."""

    verdict: Verdict
    reason: str
    next_attempt_at: datetime | None = None
    delay_s: float | None = None
    disable_endpoint: bool = False


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP-date); ``None`` if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:  # the database's naive UTC
        now = now.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def jittered(delay_s: float, rng: Rng, *, fraction: float = JITTER_FRACTION) -> float:
    """``delay_s`` spread by ±``fraction`` so that a burst of failures does not retry in lockstep."""
    return delay_s * (1.0 + rng.uniform(-fraction, fraction))


def backoff_s(failures: int, rng: Rng, *, base_s: float = 0.1, cap_s: float = 5.0) -> float:
    """Wait after the ``failures``-th failure in a row of a database or other local resource.

    Doubles from ``base_s`` up to ``cap_s``, jittered like the schedule: a worker backs off while
    its database is down, and is back within ``cap_s`` (+20 %) of it returning.
    """
    if failures < 1:
        raise ValueError(f"failures are counted from 1, got {failures}")
    return jittered(min(base_s * 2.0 ** min(failures - 1, 62), cap_s), rng)


def _reason(outcome: Outcome) -> str:
    if outcome.status is None:
        return f"error: {outcome.error or 'unknown'}"
    if 300 <= outcome.status < 400:
        location = outcome.headers.get("location")
        return f"HTTP {outcome.status} (redirect not followed{': ' + location if location else ''})"
    return f"HTTP {outcome.status}"


def decide(
    attempt: int,
    outcome: Outcome,
    now: datetime,
    *,
    schedule: Sequence[float] = DEFAULT_SCHEDULE_S,
    rng: Rng,
) -> Decision:
    """Decide the fate of a delivery after its ``attempt``-th attempt (1-based) ended in ``outcome``.

    * any 2xx → delivered; everything else (3xx included) is a failure;
    * ``webhook-delivery: abort`` on a failure → failed at once, no more retries;
    * 410 → the endpoint is disabled; the delivery keeps its schedule (it waits while disabled);
    * 429/503 → ``Retry-After`` is honoured, clamped to [scheduled, 2 × scheduled] and at least 60 s;
    * after the last attempt of ``schedule`` → failed (listed for replay).
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    if not schedule:
        raise ValueError("a retry schedule needs at least one entry")
    if outcome.succeeded:
        return Decision(Verdict.DELIVERED, _reason(outcome))
    reason = _reason(outcome)
    if outcome.headers.get(ABORT_HEADER, "").strip().lower() == ABORT_VALUE:
        return Decision(Verdict.FAILED, f"{reason}; receiver aborted retries")
    gone = outcome.status == 410
    if attempt >= len(schedule):
        return Decision(
            Verdict.FAILED, f"{reason}; {len(schedule)} attempts exhausted", disable_endpoint=gone
        )
    delay_s = jittered(schedule[attempt], rng)
    if outcome.status in THROTTLE_STATUSES:
        asked = retry_after_s(outcome.headers.get("retry-after"), now)
        if asked is not None:
            delay_s = min(max(asked, delay_s), 2 * delay_s)
        delay_s = max(delay_s, THROTTLE_MIN_DELAY_S)
    return Decision(
        Verdict.RETRY,
        reason,
        next_attempt_at=now + timedelta(seconds=delay_s),
        delay_s=delay_s,
        disable_endpoint=gone,
    )
