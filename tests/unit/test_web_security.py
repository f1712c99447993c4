"""Admin UI building blocks: signed session cookie, CSRF check, login limiter, password check, charts."""

from __future__ import annotations

import pytest

from contactsync.errors import ConfigError
from contactsync.web import charts
from contactsync.web.security import LoginLimiter, PasswordCheck, SessionCodec, csrf_ok, hash_password


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


def test_session_cookie_round_trips_and_refuses_tampering_expiry_and_other_keys() -> None:
    clock = Clock()
    codec = SessionCodec("secret", purpose="platform", max_age_s=60, clock_s=clock)
    session = codec.new(user="admin")
    cookie = codec.dump(session)
    assert codec.load(cookie) == session
    body, _, sig = cookie.partition(".")
    assert codec.load(body[:-2] + "AA." + sig) is None
    assert codec.load(cookie + "x") is None
    assert codec.load("garbage") is None
    assert SessionCodec("secret", purpose="listener", clock_s=clock).load(cookie) is None
    assert SessionCodec("other", purpose="platform", clock_s=clock).load(cookie) is None
    clock.now_s += 61
    assert codec.load(cookie) is None


def test_every_new_session_gets_its_own_csrf_token() -> None:
    codec = SessionCodec("s", purpose="platform", clock_s=Clock())
    first, second = codec.new(), codec.new(user="admin")
    assert first.csrf != second.csrf
    assert not first.authenticated
    assert second.authenticated
    assert csrf_ok(first, first.csrf)
    assert not csrf_ok(first, second.csrf)
    assert not csrf_ok(first, "")
    assert not csrf_ok(None, first.csrf)


def test_login_limiter_blocks_after_five_failures_until_the_window_slides() -> None:
    clock = Clock()
    limiter = LoginLimiter(clock_s=clock)
    for _ in range(5):
        assert limiter.blocked("1.2.3.4") == 0
        limiter.failed("1.2.3.4")
    assert limiter.blocked("1.2.3.4") == pytest.approx(60.0)
    assert limiter.blocked("5.6.7.8") == 0
    clock.now_s += 30
    assert limiter.blocked("1.2.3.4") == pytest.approx(30.0)
    clock.now_s += 30.5
    assert limiter.blocked("1.2.3.4") == 0
    limiter.failed("1.2.3.4")
    limiter.succeeded("1.2.3.4")
    assert limiter.blocked("1.2.3.4") == 0


def test_password_check_accepts_a_plain_setting_or_its_argon2_hash() -> None:
    assert PasswordCheck("s3cret").verify("s3cret")
    assert not PasswordCheck("s3cret").verify("S3cret")
    hashed = hash_password("s3cret")
    assert hashed.startswith("$argon2id$")
    assert PasswordCheck(hashed).verify("s3cret")
    assert not PasswordCheck(hashed).verify(hashed)
    with pytest.raises(ConfigError):
        PasswordCheck("")


def test_charts_escape_their_labels_and_scale_to_the_largest_value() -> None:
    svg = charts.stacked_bars(["<b>", "10:01"], {"success": [3, 1], "http_5xx": [1, 0]}, title="a <title>")
    assert "<b>" not in svg
    assert "&lt;b&gt;" in svg
    assert "&lt;title&gt;" in svg
    assert svg.count("<rect") == 3 + 2  # three bars, two legend swatches
    named = charts.stacked_bars(["10:00"], {"http_5xx": [1]}, title="t", names={"http_5xx": "server error"})
    assert ">server error</text>" in named  # the legend says the outcome in words
    assert "http_5xx" not in named
    line = charts.line(["10:00", "10:01", "10:02"], [5.0, None, 7.5], title="latency")
    assert line.count("<circle") == 2  # a gap splits the series into two single points
    assert ">7.5 ms<" in line
