"""The dispatcher against misbehaving receivers on 127.0.0.1: every outcome, retries, signatures, lanes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import standardwebhooks
from aiohttp import web

from contactsync.db import platform as t
from contactsync.delivery import endpoints as ep
from contactsync.delivery import interventions
from contactsync.delivery.dispatcher import Dispatcher, DispatcherConfig
from contactsync.delivery.endpoints import endpoint_key
from contactsync.delivery.netguard import NetPolicy
from support.delivery import (
    DEFAULT_ACCOUNT,
    DEFAULT_ACTION,
    OLD_SECRET,
    SECRET,
    FakeClock,
    Receiver,
    enqueue_many,
    request,
    seed_action,
    wait_for,
)


class Middle:
    """No jitter: delays are exactly the schedule's."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


SCHEDULE = [0, 100, 300]
LOOPBACK = NetPolicy(allowed_cidrs=["127.0.0.1/32"])


def key_of(url: str) -> ep.EndpointKey:
    """The endpoint of ``url`` of the account :func:`migrated` seeds."""
    return ep.EndpointKey(DEFAULT_ACCOUNT, endpoint_key(url))


def config(**kw: Any) -> DispatcherConfig:
    base: dict[str, Any] = {
        "owner": "test",
        "policy": LOOPBACK,
        "poll_interval_s": 0.05,
        "flush_interval_s": 0.005,
        "shutdown_grace_s": 5.0,
        "health_interval_s": 3600.0,
    }
    return DispatcherConfig(**{**base, **kw})


async def running(dispatcher: Dispatcher, body: Callable[[], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop=stop))
    try:
        await body()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def rows(engine: sa.Engine) -> dict[int, Any]:
    with engine.connect() as conn:
        return {r.transactionid: r for r in conn.execute(sa.select(t.deliveries))}


def attempts(engine: sa.Engine, tid: int) -> list[Any]:
    d, a = t.deliveries.c, t.delivery_attempts.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(t.delivery_attempts)
                .join(t.deliveries, d.id == a.delivery_id)
                .where(d.transactionid == tid)
                .order_by(a.number)
            )
        )


async def reply(status: int, headers: dict[str, str] | None = None, body: str = "ok") -> web.Response:
    return web.Response(status=status, headers=headers or {}, text=body)


def test_every_outcome(engine: sa.Engine) -> None:
    start = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    clock = FakeClock(start)
    settings = {"retry_schedule_s": SCHEDULE, "timeout_s": 1.0, "connect_timeout_s": 1.0}
    with engine.begin() as conn:
        action_id = seed_action(conn, now=start, settings=settings)

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * 65536
        for _ in range(80):  # 5 MB unless the client hangs up
            await response.write(chunk)
        return response

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    handlers: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
        "ok": lambda r: reply(200, body="stored"),
        "created": lambda r: reply(201),
        "redirect": lambda r: reply(302, {"Location": "http://169.254.169.254/latest/meta-data/"}),
        "bad": lambda r: reply(400),
        "error": lambda r: reply(500),
        "gone": lambda r: reply(410),
        "throttle": lambda r: reply(429, {"Retry-After": "150"}),
        "unavailable": lambda r: reply(503, {"Retry-After": "1000"}),
        "abort": lambda r: reply(500, {"webhook-delivery": "abort"}),
        "huge": huge,
        "slow_headers": hang,
    }
    expected: dict[str, tuple[str, str, float | None]] = {
        # name: (state, attempt outcome, delay until next attempt)
        "ok": ("delivered", "success", None),
        "created": ("delivered", "success", None),
        "redirect": ("pending", "http_3xx", 100),
        "bad": ("pending", "http_4xx", 100),
        "error": ("pending", "http_5xx", 100),
        "gone": ("pending", "gone", 100),
        "throttle": ("pending", "http_4xx", 150),
        "unavailable": ("pending", "http_5xx", 200),
        "abort": ("failed", "http_5xx", None),
        "huge": ("delivered", "success", None),
        "slow_headers": ("pending", "timeout", 100),
        "refused": ("pending", "connect", 100),
        "reset": ("pending", "reset", 100),
        "reset_mid_body": ("pending", "reset", 100),
        "slow_body": ("pending", "timeout", 100),
    }

    async def main() -> None:
        receiver = Receiver()
        for name, handler in handlers.items():
            await receiver.add(name, handler)
        receiver.add_refusing("refused")
        await receiver.add_raw("reset", None, rst=True)
        await receiver.add_raw(
            "reset_mid_body", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial", rst=True
        )
        await receiver.add_raw(
            "slow_body", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial", stall_s=5
        )
        names = sorted(expected)
        tids = {name: i + 1 for i, name in enumerate(names)}
        enqueue_many(
            engine, [request(tids[n], receiver.url(n), action_id=action_id) for n in names], now=start
        )
        dispatcher = Dispatcher(engine, config=config(), clock=clock, rng=Middle())

        async def body() -> None:
            await wait_for(
                lambda: (
                    all(r.attempt_count >= 1 or r.state != "pending" for r in rows(engine).values())
                    and all(r.state != "in_flight" for r in rows(engine).values())
                ),
                what="one attempt each",
            )

        try:
            await running(dispatcher, body)
        finally:
            await receiver.close()
        got = rows(engine)
        for name in names:
            row = got[tids[name]]
            state, outcome, delay = expected[name]
            [attempt] = attempts(engine, tids[name])
            assert (name, row.state, attempt.outcome) == (name, state, outcome), attempt.error
            if delay is not None:
                assert row.next_attempt_at == start + timedelta(seconds=delay), name
        assert attempts(engine, tids["ok"])[0].response_body == b"stored"
        huge_attempt = attempts(engine, tids["huge"])[0]
        assert len(huge_attempt.response_body) == 20 * 1024
        redirect = got[tids["redirect"]]
        assert "169.254.169.254" in redirect.last_error
        assert attempts(engine, tids["redirect"])[0].response_headers["location"].startswith("http://169.254")
        assert "aborted" in got[tids["abort"]].last_error
        with engine.connect() as conn:
            assert ep.disabled(conn) == [key_of(receiver.url("gone"))]
        assert len(receiver.arrivals["ok"]) == 1

    asyncio.run(main())


def test_retries_follow_the_schedule_with_same_bytes_and_valid_signatures(engine: sa.Engine) -> None:
    start = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    clock = FakeClock(start)
    settings = {"retry_schedule_s": [0, 5, 30, 60]}
    with engine.begin() as conn:
        action_id = seed_action(
            conn,
            now=start,
            settings=settings,
            previous_secret=OLD_SECRET,
            previous_secret_expires_at=start + timedelta(hours=1),
        )
    statuses = iter([500, 503, 200, 500, 200])

    async def flaky(request: web.Request) -> web.Response:
        return web.Response(status=next(statuses))

    async def main() -> None:
        receiver = Receiver()
        await receiver.add("flaky", flaky)
        post = request(1, receiver.url("flaky"), action_id=action_id, body=b"a[b]=1&c=%C3%A9")
        get_url = receiver.url("flaky", "/sync?id=42&name=J%C3%BCrgen+X&e=a%40b.c")
        get = request(2, get_url, action_id=action_id, method="GET")
        enqueue_many(engine, [post], now=start)
        dispatcher = Dispatcher(engine, config=config(), clock=clock, rng=Middle())

        async def body() -> None:
            await wait_for(lambda: len(receiver.arrivals.get("flaky", [])) == 1, what="first attempt")
            await wait_for(lambda: rows(engine)[1].state == "pending" and rows(engine)[1].attempt_count == 1)
            assert rows(engine)[1].next_attempt_at == start + timedelta(seconds=5)
            clock.advance(4)
            dispatcher.wake()
            await asyncio.sleep(0.3)
            assert len(receiver.arrivals["flaky"]) == 1  # not due yet
            clock.advance(1)
            dispatcher.wake()
            await wait_for(lambda: rows(engine)[1].attempt_count == 2, what="second attempt")
            assert rows(engine)[1].next_attempt_at == start + timedelta(seconds=5 + 60)  # 503: at least 60 s
            clock.advance(60)
            dispatcher.wake()
            await wait_for(lambda: rows(engine)[1].state == "delivered", what="third attempt")
            enqueue_many(engine, [get], now=clock())
            dispatcher.wake()
            await wait_for(lambda: rows(engine)[2].attempt_count == 1, what="GET attempt")
            clock.advance(5)
            dispatcher.wake()
            await wait_for(lambda: rows(engine)[2].state == "delivered", what="GET retry")

        try:
            await running(dispatcher, body)
        finally:
            await receiver.close()
        arrived = receiver.arrivals["flaky"]
        assert len(arrived) == 5
        posts, gets = arrived[:3], arrived[3:]
        assert {a.body for a in posts} == {b"a[b]=1&c=%C3%A9"}
        assert {a.headers["webhook-id"] for a in posts} == {"1"}
        assert [int(a.headers["webhook-timestamp"]) for a in posts] == [
            int(start.replace(tzinfo=UTC).timestamp()) + s for s in (0, 5, 65)
        ]
        assert {a.path_qs for a in gets} == {"/sync?id=42&name=J%C3%BCrgen+X&e=a%40b.c"}
        assert {a.body for a in gets} == {b""}
        for a in posts + gets:
            assert a.headers["User-Agent"].startswith("contactsync/")
            assert a.headers["X-Api-Key"] == "k"
            assert len(a.headers["webhook-signature"].split(" ")) == 2  # rotation: old and new secret
            content = a.body if a.method == "POST" else a.path_qs.encode()
            for secret in (SECRET, OLD_SECRET):
                standardwebhooks.Webhook(secret).verify(content, a.headers, json_parse=False)
        assert posts[0].headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert "Content-Type" not in gets[0].headers
        assert [a.number for a in attempts(engine, 1)] == [1, 2, 3]
        assert [a.status_code for a in attempts(engine, 1)] == [500, 503, 200]

    asyncio.run(main())


def test_first_attempts_are_not_stuck_behind_retries_and_endpoint_limits_hold(engine: sa.Engine) -> None:
    start = datetime.now(UTC).replace(tzinfo=None)

    async def main() -> None:
        receiver = Receiver()

        async def hang(request: web.Request) -> web.Response:
            await receiver.release.wait()
            return web.Response(text="finally")

        await receiver.add("hang", hang)
        await receiver.add("fast", lambda r: reply(200))
        retries = [request(i, receiver.url("hang")) for i in range(1, 21)]
        enqueue_many(engine, retries, now=start)
        with engine.begin() as conn:  # make them retries: one attempt already made
            conn.execute(t.deliveries.update().values(attempt_count=1))
        dispatcher = Dispatcher(
            engine,
            config=config(concurrency=8, retry_concurrency=4, endpoint_concurrency=3, lease_s=600),
        )

        async def body() -> None:
            await wait_for(lambda: len(receiver.arrivals.get("hang", [])) == 3, what="retries in flight")
            enqueue_many(engine, [request(100 + i, receiver.url("fast")) for i in range(10)], now=start)
            dispatcher.wake()
            await wait_for(
                lambda: sum(r.state == "delivered" for r in rows(engine).values()) == 10,
                what="first attempts",
            )
            assert len(receiver.arrivals["hang"]) == 3  # endpoint limit: 3 in flight, the rest wait
            receiver.release.set()
            await wait_for(
                lambda: all(r.state == "delivered" for r in rows(engine).values()), what="retries drained"
            )

        try:
            await running(dispatcher, body)
        finally:
            await receiver.close()
        assert receiver.max_in_flight["hang"] == 3
        assert len(receiver.arrivals["hang"]) == 20

    asyncio.run(main())


def test_graceful_shutdown_releases_what_it_cannot_finish(engine: sa.Engine) -> None:
    start = datetime.now(UTC).replace(tzinfo=None)

    async def main() -> None:
        receiver = Receiver()

        async def hang(request: web.Request) -> web.Response:
            await receiver.release.wait()
            return web.Response(text="late")

        await receiver.add("hang", hang)
        await receiver.add("fast", lambda r: reply(200))
        enqueue_many(engine, [request(1, receiver.url("fast"))], now=start)
        enqueue_many(engine, [request(i, receiver.url("hang")) for i in range(2, 6)], now=start)
        dispatcher = Dispatcher(engine, config=config(shutdown_grace_s=0.2, endpoint_concurrency=2))

        async def body() -> None:
            await wait_for(lambda: len(receiver.arrivals.get("hang", [])) == 2, what="hanging attempts")
            await wait_for(lambda: rows(engine)[1].state == "delivered", what="fast delivery")

        try:
            await running(dispatcher, body)
        finally:
            await receiver.close()
        got = rows(engine)
        assert got[1].state == "delivered"
        for tid in range(2, 6):
            assert (got[tid].state, got[tid].attempt_count, got[tid].lease_owner) == ("pending", 0, None)
            assert attempts(engine, tid) == []

    asyncio.run(main())


def test_disabled_endpoint_waits_then_resumes(engine: sa.Engine) -> None:
    start = datetime.now(UTC).replace(tzinfo=None)

    async def main() -> None:
        receiver = Receiver()
        await receiver.add("ok", lambda r: reply(200))
        with engine.begin() as conn:
            ep.disable(conn, key_of(receiver.url("ok")), reason="maintenance", now=start)
        enqueue_many(engine, [request(1, receiver.url("ok"))], now=start)
        dispatcher = Dispatcher(engine, config=config())

        async def body() -> None:
            await asyncio.sleep(0.3)
            assert rows(engine)[1].state == "pending"
            with engine.begin() as conn:
                ep.enable(conn, key_of(receiver.url("ok")), now=start)
            dispatcher.wake()
            await wait_for(lambda: rows(engine)[1].state == "delivered", what="resumed delivery")

        try:
            await running(dispatcher, body)
        finally:
            await receiver.close()
        assert len(receiver.arrivals["ok"]) == 1

    asyncio.run(main())


def test_blocked_destination_is_recorded_not_sent(engine: sa.Engine) -> None:
    start = datetime.now(UTC).replace(tzinfo=None)

    async def main() -> None:
        receiver = Receiver()
        await receiver.add("ok", lambda r: reply(200))
        enqueue_many(engine, [request(1, receiver.url("ok"))], now=start)
        dispatcher = Dispatcher(engine, config=config(policy=NetPolicy()))

        async def body() -> None:
            await wait_for(lambda: rows(engine)[1].attempt_count == 1, what="blocked attempt")

        try:
            await running(dispatcher, body)
        finally:
            await receiver.close()
        [attempt] = attempts(engine, 1)
        assert attempt.outcome == "blocked"
        assert "loopback" in attempt.error
        assert receiver.arrivals == {}

    asyncio.run(main())


def test_metrics_on_a_registry_passed_in(engine: sa.Engine) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from contactsync.delivery.metrics import DeliveryMetrics

    start = datetime.now(UTC).replace(tzinfo=None)
    registry = CollectorRegistry()
    metrics = DeliveryMetrics(registry)

    async def main() -> None:
        receiver = Receiver()
        await receiver.add("ok", lambda r: reply(200))
        await receiver.add("error", lambda r: reply(500))
        enqueue_many(engine, [request(1, receiver.url("ok")), request(2, receiver.url("error"))], now=start)
        dispatcher = Dispatcher(engine, config=config(metrics_interval_s=0.05), metrics=metrics)

        async def body() -> None:
            await wait_for(lambda: all(r.attempt_count == 1 for r in rows(engine).values()), what="attempts")
            await wait_for(
                lambda: (
                    registry.get_sample_value("contactsync_deliveries_queue_depth", {"state": "delivered"})
                    == 1.0
                ),
                what="gauges",
            )

        try:
            await running(dispatcher, body)
        finally:
            await receiver.close()
        sample = registry.get_sample_value
        assert sample("contactsync_delivery_attempts_total", {"outcome": "success"}) == 1
        assert sample("contactsync_delivery_attempts_total", {"outcome": "http_5xx"}) == 1
        assert sample("contactsync_deliveries_total", {"outcome": "pending"}) == 1
        assert sample("contactsync_delivery_attempt_duration_seconds_count") == 2
        assert sample("contactsync_deliveries_queue_depth", {"state": "pending"}) == 1
        assert sample("contactsync_endpoints_disabled") == 0
        assert b"contactsync_deliveries_oldest_pending_age_seconds" in generate_latest(registry)

    asyncio.run(main())


def test_json_body_is_sent_as_is(engine: sa.Engine) -> None:
    start = datetime.now(UTC).replace(tzinfo=None)
    payload = json.dumps({"transactionid": "7", "contact": {"email": "é@x.test"}}).encode()

    async def main() -> None:
        receiver = Receiver()
        await receiver.add("ok", lambda r: reply(204))
        from contactsync.delivery.outbox import OutboxRequest

        url = receiver.url("ok")
        req = OutboxRequest(
            transactionid=7, account_id=DEFAULT_ACCOUNT, action_id=DEFAULT_ACTION,
            endpoint=endpoint_key(url),
            method="POST", url=url, body=payload, content_type="application/json",
        )  # fmt: skip
        enqueue_many(engine, [req], now=start)
        dispatcher = Dispatcher(engine, config=config())

        async def body() -> None:
            await wait_for(lambda: rows(engine)[7].state == "delivered", what="delivery")

        try:
            await running(dispatcher, body)
        finally:
            await receiver.close()
        [arrival] = receiver.arrivals["ok"]
        assert arrival.body == payload
        assert arrival.headers["Content-Type"] == "application/json"
        assert arrival.headers["webhook-signature"].startswith("v1,")

    asyncio.run(main())


def test_an_ordered_chain_goes_out_link_by_link_without_waiting_for_a_poll(engine: sa.Engine) -> None:
    """Each recorded delivery wakes the claim of its successor: with an hour-long poll interval (and
    flush interval) the chain still completes, in order."""
    start = datetime.now(UTC).replace(tzinfo=None)
    links = 5

    async def main() -> None:
        receiver = Receiver()
        await receiver.add("ok", lambda r: reply(200))
        chain = [request(i, receiver.url("ok"), ordering_key="7:1") for i in range(1, links + 1)]
        enqueue_many(engine, chain, now=start)
        dispatcher = Dispatcher(engine, config=config(poll_interval_s=3600.0, flush_interval_s=3600.0))

        async def body() -> None:
            await wait_for(
                lambda: [r.state for r in rows(engine).values()] == ["delivered"] * links,
                what="every link of the chain",
            )

        try:
            await running(dispatcher, body)
        finally:
            await receiver.close()
        sent = [a.headers["webhook-id"] for a in receiver.arrivals["ok"]]
        assert sent == [str(i) for i in range(1, links + 1)]
        assert receiver.max_in_flight["ok"] == 1

    asyncio.run(main())


def test_token_bucket_spaces_starts_at_the_rate() -> None:
    from contactsync.delivery.dispatcher import TokenBucket

    async def main() -> None:
        now = [0.0]
        starts: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            now[0] += seconds

        bucket = TokenBucket(5.0, monotonic=lambda: now[0], sleep=fake_sleep)
        for _ in range(15):
            await bucket.acquire()
            starts.append(now[0])
        assert starts[:5] == [0.0] * 5  # a one-second burst
        assert starts[5:] == pytest.approx([0.2 * i for i in range(1, 11)])

    asyncio.run(main())


def test_rate_limited_endpoint_still_delivers(engine: sa.Engine) -> None:
    start = datetime.now(UTC).replace(tzinfo=None)

    async def main() -> None:
        receiver = Receiver()
        await receiver.add("ok", lambda r: reply(200))
        with engine.begin() as conn:
            ep.ensure(conn, [key_of(receiver.url("ok"))])
            conn.execute(t.endpoints.update().values(rate_limit_per_s=200.0, max_in_flight=2))
        enqueue_many(engine, [request(i, receiver.url("ok")) for i in range(1, 31)], now=start)
        dispatcher = Dispatcher(engine, config=config(endpoint_concurrency=50))

        async def body() -> None:
            await wait_for(
                lambda: all(r.state == "delivered" for r in rows(engine).values()), what="deliveries"
            )

        try:
            await running(dispatcher, body)
        finally:
            await receiver.close()
        assert len(receiver.arrivals["ok"]) == 30
        assert receiver.max_in_flight["ok"] <= 2  # the endpoint's own limit, tighter than the process's

    asyncio.run(main())


def test_send_once_for_the_editors_test_button() -> None:
    from contactsync.delivery.attempt import DEFAULT_USER_AGENT, attempt_headers, send_once

    def signed(method: str, url: str, body: bytes, content_type: str = "") -> dict[str, str]:
        return attempt_headers(
            method=method,
            url=url,
            body=body,
            content_type=content_type,
            static_headers={},
            transactionid=99,
            keys=[SECRET],
            timestamp=int(time.time()),
            user_agent=DEFAULT_USER_AGENT,
        )

    async def main() -> None:
        receiver = Receiver()
        await receiver.add("ok", lambda r: reply(200, body="hello"))
        url = receiver.url("ok")
        try:
            result = await send_once(
                method="POST",
                url=url,
                headers=signed("POST", url, b"a=1", "application/x-www-form-urlencoded"),
                body=b"a=1",
                policy=LOOPBACK,
            )
            blocked = await send_once(
                method="GET", url=url, headers=signed("GET", url, b""), body=None, policy=NetPolicy()
            )
        finally:
            await receiver.close()
        assert (result.status, result.body) == (200, b"hello")
        [arrival] = receiver.arrivals["ok"]
        standardwebhooks.Webhook(SECRET).verify(arrival.body, arrival.headers, json_parse=False)
        assert blocked.error == "blocked"

    asyncio.run(main())


def test_send_once_past_its_guard_is_a_timeout_not_an_exception() -> None:
    from contactsync.delivery.attempt import send_once

    async def main() -> None:
        receiver = Receiver()

        async def held(_request: web.Request) -> web.Response:
            await receiver.release.wait()  # released only once the attempt has ended
            return await reply(200)

        await receiver.add("held", held)
        try:
            result = await send_once(
                method="GET",
                url=receiver.url("held"),
                headers={},
                body=None,
                policy=LOOPBACK,
                total_timeout_s=60.0,
                guard_s=0.05,
            )
        finally:
            receiver.release.set()
            await receiver.close()
        assert (result.status, result.error) == (None, "timeout")
        assert "no answer within 0.05 s" in result.detail

    asyncio.run(main())


def test_a_delivery_without_a_secret_fails_and_is_never_sent(engine: sa.Engine) -> None:
    start = datetime.now(UTC).replace(tzinfo=None)

    async def main() -> None:
        receiver = Receiver()
        await receiver.add("ok", lambda r: reply(200))
        enqueue_many(engine, [request(1, receiver.url("ok"), action_id=None)], now=start)
        dispatcher = Dispatcher(engine, config=config())

        async def body() -> None:
            await wait_for(lambda: rows(engine)[1].state == "failed", what="refused delivery")

        try:
            await running(dispatcher, body)
        finally:
            await receiver.close()
        assert receiver.arrivals.get("ok", []) == []
        [attempt] = attempts(engine, 1)
        assert attempt.outcome == "unsigned"
        assert "no secret to sign it with" in rows(engine)[1].last_error
        with engine.connect() as conn:  # nothing was sent: the endpoint's health is untouched
            health = conn.execute(sa.select(t.endpoints.c.failing_since)).scalars().all()
        assert all(since is None for since in health)

    asyncio.run(main())


def test_deleting_an_action_cancels_its_pending_deliveries(engine: sa.Engine) -> None:
    from contactsync.automation.actions import delete_action

    now = datetime(2026, 3, 1)
    with engine.begin() as conn:
        doomed = seed_action(conn, now=now)
    enqueue_many(engine, [request(i, "http://127.0.0.1:9/x", action_id=doomed) for i in (1, 2, 3)], now=now)
    enqueue_many(engine, [request(4, "http://127.0.0.1:9/x")], now=now)  # another action's
    with engine.begin() as conn:
        assert interventions.pending_for_actions(conn, [doomed]) == 3
        assert delete_action(conn, doomed, now=now) == 3
    got = rows(engine)
    assert [got[i].state for i in (1, 2, 3, 4)] == ["cancelled", "cancelled", "cancelled", "pending"]
    assert got[1].last_error == interventions.ACTION_DELETED


def _second_account_action(engine: sa.Engine, now: datetime) -> tuple[int, int]:
    """Another account with its own list, automation and action: (account id, action id)."""
    with engine.begin() as conn:
        account = conn.execute(
            t.accounts.insert().values(name="other", created_at=now).returning(t.accounts.c.id)
        ).scalar_one()
        lst = conn.execute(
            t.lists.insert().values(account_id=account, name="l", created_at=now).returning(t.lists.c.id)
        ).scalar_one()
        automation = conn.execute(
            t.automations.insert()
            .values(list_id=lst, name="a", trigger="manual", conditions={}, created_at=now, updated_at=now)
            .returning(t.automations.c.id)
        ).scalar_one()
        action = conn.execute(
            t.actions.insert()
            .values(
                automation_id=automation,
                settings={},
                secret=SECRET,
                endpoint="e",
                created_at=now,
                updated_at=now,
            )
            .returning(t.actions.c.id)
        ).scalar_one()
    return int(account), int(action)


def test_a_410_disables_only_the_account_whose_url_answered_it(engine: sa.Engine) -> None:
    start = datetime.now(UTC).replace(tzinfo=None)
    other_account, other_action = _second_account_action(engine, start)

    async def main() -> None:
        receiver = Receiver()
        await receiver.add("host", lambda r: reply(410 if r.path == "/gone" else 200))
        gone = receiver.url("host", "/gone")
        enqueue_many(engine, [request(1, gone)], now=start)  # account 1's URL answers 410
        dispatcher = Dispatcher(engine, config=config())

        async def body() -> None:
            await wait_for(lambda: bool(attempts(engine, 1)), what="the 410")
            later = request(
                2, receiver.url("host", "/fine"), account_id=other_account, action_id=other_action
            )
            enqueue_many(engine, [later], now=start)
            dispatcher.wake()
            await wait_for(lambda: rows(engine)[2].state == "delivered", what="the other account's delivery")

        try:
            await running(dispatcher, body)
        finally:
            await receiver.close()
        with engine.connect() as conn:
            assert ep.disabled(conn) == [key_of(gone)]  # the same host, but only account 1's endpoint
            events = conn.execute(
                sa.select(t.endpoint_events.c.account_id, t.endpoint_events.c.message)
            ).all()
        assert [account for account, _ in events] == [DEFAULT_ACCOUNT]

    asyncio.run(main())
