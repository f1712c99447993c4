"""The retry policy: schedule, jitter, Retry-After clamping, 410 and abort handling."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.delivery.retry import (
    DEFAULT_SCHEDULE_S,
    Outcome,
    Verdict,
    backoff_s,
    decide,
    retry_after_s,
)
from support import examples

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Fixed:
    """An rng whose uniform() always lands at one relative point of the range (0 = low, 1 = high)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.at


MIDDLE = Fixed(0.5)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_is_delivered(status: int) -> None:
    decision = decide(1, Outcome(status=status), NOW, rng=MIDDLE)
    assert decision.verdict is Verdict.DELIVERED
    assert decision.next_attempt_at is None


def test_default_schedule_without_jitter_adds_up_to_27_5_hours() -> None:
    assert len(DEFAULT_SCHEDULE_S) == 8
    assert DEFAULT_SCHEDULE_S[0] == 0
    assert sum(DEFAULT_SCHEDULE_S) == pytest.approx(27.5 * 3600, rel=0.01)


def test_whole_schedule_replayed_under_an_injected_clock() -> None:
    now = NOW
    delays = []
    for attempt in range(1, 9):
        decision = decide(attempt, Outcome(status=500), now, rng=MIDDLE)
        if attempt == 8:
            assert decision.verdict is Verdict.FAILED
            assert "8 attempts exhausted" in decision.reason
            break
        assert decision.verdict is Verdict.RETRY
        assert decision.next_attempt_at is not None
        delays.append(decision.delay_s)
        now = decision.next_attempt_at
    assert delays == list(DEFAULT_SCHEDULE_S[1:])
    assert now - NOW == timedelta(seconds=sum(DEFAULT_SCHEDULE_S))


@pytest.mark.parametrize(("at", "factor"), [(0.0, 0.8), (1.0, 1.2)])
def test_jitter_bounds(at: float, factor: float) -> None:
    decision = decide(3, Outcome(status=500), NOW, rng=Fixed(at))
    assert decision.delay_s == pytest.approx(DEFAULT_SCHEDULE_S[3] * factor)


@settings(max_examples=examples(ci=500))
@given(attempt=st.integers(1, 7), seed=st.integers(0, 2**32))
def test_jitter_stays_within_20_percent(attempt: int, seed: int) -> None:
    decision = decide(attempt, Outcome(error="timeout"), NOW, rng=random.Random(seed))
    scheduled = DEFAULT_SCHEDULE_S[attempt]
    assert decision.delay_s is not None
    assert scheduled * 0.8 <= decision.delay_s <= scheduled * 1.2


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(status=301, headers={"location": "http://169.254.169.254/"}),
        Outcome(status=302),
        Outcome(status=400),
        Outcome(status=404),
        Outcome(status=500),
        Outcome(status=502),
        Outcome(error="connect"),
        Outcome(error="reset"),
        Outcome(error="timeout"),
    ],
)
def test_failures_retry(outcome: Outcome) -> None:
    decision = decide(1, outcome, NOW, rng=MIDDLE)
    assert decision.verdict is Verdict.RETRY
    assert decision.delay_s == pytest.approx(5.0)
    assert not decision.disable_endpoint


def test_redirect_reason_names_the_location() -> None:
    decision = decide(1, Outcome(status=302, headers={"location": "http://x.test/"}), NOW, rng=MIDDLE)
    assert "redirect not followed: http://x.test/" in decision.reason


def test_410_disables_the_endpoint_and_keeps_the_schedule() -> None:
    decision = decide(2, Outcome(status=410), NOW, rng=MIDDLE)
    assert decision.disable_endpoint
    assert decision.verdict is Verdict.RETRY
    assert decision.delay_s == pytest.approx(300.0)
    last = decide(8, Outcome(status=410), NOW, rng=MIDDLE)
    assert last.verdict is Verdict.FAILED
    assert last.disable_endpoint


@pytest.mark.parametrize("value", ["abort", "Abort", " ABORT "])
def test_abort_header_stops_retries(value: str) -> None:
    decision = decide(1, Outcome(status=500, headers={"webhook-delivery": value}), NOW, rng=MIDDLE)
    assert decision.verdict is Verdict.FAILED
    assert "aborted" in decision.reason
    assert decision.next_attempt_at is None


def test_abort_header_on_a_2xx_is_still_delivered() -> None:
    decision = decide(1, Outcome(status=200, headers={"webhook-delivery": "abort"}), NOW, rng=MIDDLE)
    assert decision.verdict is Verdict.DELIVERED


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected_s"),
    [
        (1, None, 60.0),  # scheduled 5 s, raised to the 60 s floor
        (1, "3600", 60.0),  # asked 1 h, clamped to 2 × 5 s, then the floor
        (2, "10", 300.0),  # asked less than scheduled → scheduled
        (2, "450", 450.0),  # inside [300, 600] → honoured
        (2, "86400", 600.0),  # above → 2 × scheduled
        (2, "soon", 300.0),  # unparseable → schedule
        (2, "²", 300.0),
        (4, "0", 7200.0),
    ],
)
def test_retry_after_is_clamped(
    status: int, attempt: int, retry_after: str | None, expected_s: float
) -> None:
    headers = {} if retry_after is None else {"retry-after": retry_after}
    decision = decide(attempt, Outcome(status=status, headers=headers), NOW, rng=MIDDLE)
    assert decision.verdict is Verdict.RETRY
    assert decision.delay_s == pytest.approx(expected_s)
    assert decision.next_attempt_at == NOW + timedelta(seconds=expected_s)


def test_retry_after_as_http_date() -> None:
    when = NOW + timedelta(seconds=500)
    assert retry_after_s(format_datetime(when, usegmt=True), NOW) == pytest.approx(500)
    assert retry_after_s(format_datetime(NOW - timedelta(hours=1), usegmt=True), NOW) == 0
    decision = decide(
        2, Outcome(status=503, headers={"retry-after": format_datetime(when, usegmt=True)}), NOW, rng=MIDDLE
    )
    assert decision.delay_s == pytest.approx(500)


def test_retry_after_is_ignored_for_other_statuses() -> None:
    decision = decide(2, Outcome(status=500, headers={"retry-after": "500"}), NOW, rng=MIDDLE)
    assert decision.delay_s == pytest.approx(300.0)


def test_custom_schedule() -> None:
    schedule = (0.0, 1.0)
    assert decide(1, Outcome(status=500), NOW, schedule=schedule, rng=MIDDLE).delay_s == pytest.approx(1.0)
    assert decide(2, Outcome(status=500), NOW, schedule=schedule, rng=MIDDLE).verdict is Verdict.FAILED


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        decide(0, Outcome(status=500), NOW, rng=MIDDLE)
    with pytest.raises(ValueError, match="at least one"):
        decide(1, Outcome(status=500), NOW, schedule=(), rng=MIDDLE)


@settings(max_examples=examples(ci=500))
@given(
    attempt=st.integers(1, 20),
    status=st.one_of(st.none(), st.integers(100, 599)),
    retry_after=st.one_of(st.none(), st.text(max_size=30), st.integers(0, 10**9).map(str)),
    seed=st.integers(0, 2**32),
)
def test_decisions_are_always_coherent(
    attempt: int, status: int | None, retry_after: str | None, seed: int
) -> None:
    headers = {} if retry_after is None else {"retry-after": retry_after}
    outcome = Outcome(status=status, headers=headers, error=None if status else "connect")
    decision = decide(attempt, outcome, NOW, rng=random.Random(seed))
    if decision.verdict is Verdict.RETRY:
        assert decision.next_attempt_at is not None
        assert decision.delay_s is not None
        assert decision.next_attempt_at >= NOW
        scheduled = DEFAULT_SCHEDULE_S[attempt]
        assert decision.delay_s <= max(2 * 1.2 * scheduled, 60.0)
    else:
        assert decision.next_attempt_at is None
    assert decision.disable_endpoint == (status == 410)


@settings(max_examples=examples(ci=200, local=60))
@given(failures=st.integers(1, 10_000), seed=st.integers(0, 2**32))
def test_backoff_doubles_up_to_its_cap_with_the_schedule_jitter(failures: int, seed: int) -> None:
    rng = random.Random(seed)
    wait = backoff_s(failures, rng, base_s=0.1, cap_s=5.0)
    expected = min(0.1 * 2 ** min(failures - 1, 100), 5.0)
    assert expected * 0.8 <= wait <= expected * 1.2
    with pytest.raises(ValueError, match="from 1"):
        backoff_s(0, rng)
