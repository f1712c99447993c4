"""The dispatcher: claims due deliveries, sends them over one shared guarded pool, records every attempt.

One asyncio loop per process. Database work is synchronous SQLAlchemy Core run in worker threads;
attempts finished close together are recorded in one transaction (the flusher), which is what keeps
SQLite fast. Throttles: a global limit split into two lanes (first attempts never queue behind a
backlog of retries), a per-endpoint in-flight limit and an optional per-endpoint rate limit (held over
every process sharing a PostgreSQL database: delivery/slots.py). Leases
are extended while work waits on a throttle, and given back on shutdown, so nothing is stuck
"in flight" and nothing is attempted by two dispatchers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import sqlalchemy as sa

from contactsync.db import retention
from contactsync.db.backend import backend_of
from contactsync.db.engine import libpq_url
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery import health, notify, outbox, presence
from contactsync.delivery.attempt import AttemptResult, attempt_headers, outcome_label, send
from contactsync.delivery.config import DispatcherConfig, default_owner, utcnow
from contactsync.delivery.endpoints import EndpointKey
from contactsync.delivery.leases import Claimed, Lane, claim, extend_leases, new_lease, release
from contactsync.delivery.metrics import DeliveryMetrics
from contactsync.delivery.netguard import create_connector
from contactsync.delivery.outbox import Finished
from contactsync.delivery.retry import Outcome, Rng, decide
from contactsync.delivery.slots import Gate, create_gate
from contactsync.delivery.throttle import TokenBucket
from contactsync.wire import signing

__all__ = ["Dispatcher", "DispatcherConfig", "TokenBucket", "default_owner", "utcnow"]

log = logging.getLogger("contactsync.delivery.dispatcher")
_EPOCH, _SECOND = datetime(1970, 1, 1), timedelta(seconds=1)
"""Unix seconds of a naive UTC time without ``replace(tzinfo=…)`` (slow) on every attempt."""
_T = TypeVar("_T")


class Dispatcher:
    """Sends the outbox of one database. ``await run()`` until ``stop`` is set or SIGTERM arrives."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        config: DispatcherConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: Rng | None = None,
        metrics: DeliveryMetrics | None = None,
        connector_kwargs: dict[str, Any] | None = None,
        renderer: Callable[[datetime], int] | None = None,
    ) -> None:
        """``renderer`` renders the deliveries whose delay ends by the time it is given, one batch
        per call, returning how many rows it took (automation/send_time.py: the faces pass it in,
        since delivery does not import automation). Without one, such deliveries wait."""
        self.engine = engine
        self._renderer = renderer
        self.config = config or DispatcherConfig()
        self._clock = clock
        self._rng: Rng = rng or random.Random()
        self.metrics = metrics
        self._connector_kwargs = connector_kwargs or {}
        # SQLite has one writer: a single database thread serializes our transactions in-process
        # instead of letting them collide on the file lock and back off in SQLite's busy handler.
        self._backend = backend_of(engine)
        self._db_threads = 1 if self._backend.single_writer else 4
        self._executor: ThreadPoolExecutor | None = None
        retry_share = self.config.retry_concurrency
        if retry_share is None:
            retry_share = max(self.config.concurrency // 2, 1)
        self._capacity = {
            Lane.FIRST: self.config.concurrency,
            Lane.RETRY: min(retry_share, self.config.concurrency),
        }
        self._in_lane = {Lane.FIRST: 0, Lane.RETRY: 0}
        self._lane_slots = {lane: asyncio.Semaphore(n) for lane, n in self._capacity.items()}
        self._global_slots = asyncio.Semaphore(self.config.concurrency)
        # throttles are per account and endpoint (EndpointKey), like endpoint health
        self._in_endpoint: dict[EndpointKey, int] = {}
        self._gate: Gate | None = None
        self._limits: dict[EndpointKey, tuple[float, endpoint_rows.Limits]] = {}
        self._held: dict[int, Claimed] = {}
        self._done: list[Finished] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._keys: dict[str, bytes] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self._woken = False
        self._want_slots = False
        self._flush_wanted: asyncio.Event | None = None
        self._flush_now: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self.attempts_recorded = 0

    # --- public ----------------------------------------------------------------------------------

    def wake(self) -> None:
        """Claim now instead of at the next poll (thread-safe; the in-process signal on SQLite)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._poke, True)

    def _poke(self, woken: bool = False) -> None:
        """Make the claim loop look again (``woken``: new work was announced)."""
        self._woken |= woken
        if self._kick is not None:
            self._kick.set()

    def stop(self) -> None:
        """Ask :meth:`run` to finish in-flight work and return (thread-safe)."""
        loop, event = self._loop, self._stop
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def run(self, *, stop: asyncio.Event | None = None, handle_signals: bool = False) -> None:
        """Dispatch until ``stop`` is set (or SIGTERM/SIGINT with ``handle_signals``), then shut down."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._kick = asyncio.Event()
        self._flush_wanted = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._stop = stop or asyncio.Event()
        self._gate = create_gate(
            self.engine,
            run_db=self._db,
            holder=new_lease(self.config.owner),
            lease_s=self.config.slot_lease_s,
            turn_s=self.config.slot_turn_s,
        )
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
        connector = create_connector(
            self.config.policy, limit=self.config.concurrency + 10, **self._connector_kwargs
        )
        session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        helpers = [
            asyncio.create_task(self._flush_loop(), name="flush"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
            asyncio.create_task(self._watch_stop(), name="watch-stop"),
        ]
        if self._renderer is not None:
            helpers.append(asyncio.create_task(self._render_loop(self._renderer), name="render"))
        if self.config.listen and self._backend.listen_notify:
            helpers.append(asyncio.create_task(self._listen_loop(), name="listen"))
        if self.config.retention is not None:
            pruning = retention.keep_pruning(
                self.engine,
                self.config.retention,
                side="platform",
                interval_s=self.config.retention_interval_s,
                clock=self._clock,
                stop=self._stop,
            )
            helpers.append(asyncio.create_task(pruning, name="retention"))
        try:
            await self._claim_loop(session)
        finally:
            await self._shutdown(helpers)
            await session.close()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def _db(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run blocking database work on the dispatcher's database thread(s)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._db_threads, thread_name_prefix="contactsync-db")
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    # --- claiming --------------------------------------------------------------------------------

    async def _claim_loop(self, session: aiohttp.ClientSession) -> None:
        """Claim while there is capacity and due work; otherwise sleep until poked or the poll interval."""
        assert self._stop is not None
        assert self._kick is not None
        never = -float("inf")
        drained_at = dict.fromkeys(Lane, never)  # when a lane last found nothing (more) due
        while not self._stop.is_set():
            self._kick.clear()
            if self._woken:
                self._woken = False
                drained_at = dict.fromkeys(Lane, never)
            more_due = False
            for lane in Lane:
                if time.monotonic() - drained_at[lane] < self.config.poll_interval_s:
                    continue
                free = self._free(lane)
                if free < self._min_claim(lane) and (free <= 0 or self._in_lane[lane] > 0):
                    more_due = True  # wait for a worthwhile batch instead of one query per freed slot
                    continue
                limit = min(free, self.config.batch_size)
                try:
                    batch, limits = await self._db(self._claim_sync, lane, limit, self._saturated())
                except sa.exc.SQLAlchemyError:
                    log.exception("claiming deliveries failed; retrying after the poll interval")
                    batch, limits = [], {}
                stamp = time.monotonic()
                for name, lim in limits.items():
                    self._limits[name] = (stamp, lim)
                for claimed in batch:
                    self._held[claimed.id] = claimed
                    self._start(session, claimed, lane)
                if len(batch) < limit:
                    drained_at[lane] = time.monotonic()
                else:
                    more_due = True
            self._want_slots = more_due
            resting = {
                lane for lane in Lane if time.monotonic() - drained_at[lane] < self.config.poll_interval_s
            }
            if more_due and any(
                self._free(lane) >= self._min_claim(lane) for lane in Lane if lane not in resting
            ):
                continue  # a lane with due work has room for a worthwhile batch: claim again at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=self.config.poll_interval_s)

    async def _watch_stop(self) -> None:
        assert self._stop is not None
        await self._stop.wait()
        self._poke()

    def _min_claim(self, lane: Lane) -> int:
        # a quarter of what the lane may hold: large batches, while the rest keeps the pipe full
        return max(1, min(self.config.batch_size, self._held_limit(self._capacity[lane])) // 4)

    def _held_limit(self, in_flight: int) -> int:
        return max(int(in_flight * self.config.prefetch), in_flight)

    def _free(self, lane: Lane) -> int:
        total_free = self._held_limit(self.config.concurrency) - sum(self._in_lane.values())
        return min(self._held_limit(self._capacity[lane]) - self._in_lane[lane], total_free)

    def _saturated(self) -> list[EndpointKey]:
        return sorted(
            e for e, n in self._in_endpoint.items() if n >= self._held_limit(self._limit_of(e).max_in_flight)
        )

    def _limit_of(self, endpoint: EndpointKey) -> endpoint_rows.Limits:
        cached = self._limits.get(endpoint)
        if cached is None:
            return endpoint_rows.Limits(max_in_flight=self.config.endpoint_concurrency)
        return cached[1]

    def _claim_sync(
        self, lane: Lane, limit: int, skip: list[EndpointKey]
    ) -> tuple[list[Claimed], dict[EndpointKey, endpoint_rows.Limits]]:
        """Claim a batch and look up the throttles of endpoints not seen lately (worker thread)."""
        with self.engine.begin() as conn:
            batch = claim(
                conn,
                owner=self.config.owner,
                now=self._clock(),
                lease_s=self.config.lease_s,
                limit=limit,
                lane=lane,
                skip_endpoints=skip,
                keyring=self.config.keyring,
            )
            stale_before = time.monotonic() - self.config.limits_ttl_s
            wanted = {
                c.endpoint_key for c in batch if self._limits.get(c.endpoint_key, (-1e18,))[0] < stale_before
            }
            found = endpoint_rows.limits(conn, wanted) if wanted else {}
        for name, lim in found.items():
            if lim.max_in_flight == endpoint_rows.DEFAULT_MAX_IN_FLIGHT:  # not tuned: the process setting
                found[name] = replace(lim, max_in_flight=self.config.endpoint_concurrency)
        return batch, found

    def _start(self, session: aiohttp.ClientSession, claimed: Claimed, lane: Lane) -> None:
        self._in_lane[lane] += 1
        key = claimed.endpoint_key
        self._in_endpoint[key] = self._in_endpoint.get(key, 0) + 1
        task = asyncio.create_task(self._attempt(session, claimed, lane))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- one attempt -----------------------------------------------------------------------------

    async def _attempt(self, session: aiohttp.ClientSession, c: Claimed, lane: Lane) -> None:
        try:
            if not c.secrets:  # never sent unsigned
                refused = outbox.refuse_unsigned(c, now=self._clock())
                if refused is not None:
                    self._finished(refused)
                    return
            assert self._gate is not None
            admitted = self._gate.admit(c.endpoint_key, self._limit_of(c.endpoint_key))
            async with admitted, self._lane_slots[lane], self._global_slots:
                started = self._clock()
                result = await self._send(session, c, started)
            decision = decide(c.attempt, result.outcome, self._clock(), schedule=c.schedule_s, rng=self._rng)
            self._finished(Finished(c, result, decision, started))
        finally:
            self._in_lane[lane] -= 1
            left = self._in_endpoint[c.endpoint_key] = self._in_endpoint[c.endpoint_key] - 1
            if left == self._limit_of(c.endpoint_key).max_in_flight:
                self._poke(True)  # its prefetched work has all started: claim more for it
            if self._want_slots and self._free(lane) >= self._min_claim(lane):
                self._poke()

    def _finished(self, done: Finished) -> None:
        self._done.append(done)
        if done.claimed.ordering_key is not None and self._flush_now is not None:
            self._flush_now.set()  # its successor waits for this record: no batching delay
        if self._flush_wanted is not None:
            self._flush_wanted.set()

    async def _send(self, session: aiohttp.ClientSession, c: Claimed, started: datetime) -> AttemptResult:
        try:
            return await send(
                session,
                method=c.method,
                url=c.url,
                headers=self._headers(c, started),
                body=None if c.method == "GET" else c.body,
                policy=self.config.policy,
                connect_timeout_s=c.connect_timeout_s,
                total_timeout_s=c.total_timeout_s,
            )
        except Exception as exc:  # a bug or a bad row must not strand the lease: judge it as a failure
            log.exception("attempt of transactionid=%s failed inside the dispatcher", c.transactionid)
            return AttemptResult(Outcome(error="internal"), 0.0, detail=f"internal: {exc!r}")

    def _headers(self, c: Claimed, started: datetime) -> dict[str, str]:
        return attempt_headers(
            method=c.method,
            url=c.url,
            body=c.body,
            content_type=c.content_type,
            static_headers=c.headers,
            transactionid=c.transactionid,
            keys=[self._key(s) for s in c.secrets],
            timestamp=(started - _EPOCH) // _SECOND,
            user_agent=self.config.user_agent,
        )

    def _key(self, secret: str) -> bytes:
        key = self._keys.get(secret)
        if key is None:
            key = self._keys[secret] = signing.parse_secret(secret)
        return key

    # --- recording -------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        """Record finished attempts together after ``flush_interval_s``, or at once when an ordered
        delivery finished (the next one of its contact is waiting for the record)."""
        assert self._flush_wanted is not None
        assert self._flush_now is not None
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), timeout=self.config.flush_interval_s)
            self._flush_now.clear()
            await self._flush()

    async def _flush(self) -> None:
        batch, self._done = self._done, []
        if not batch:
            return
        try:
            recorded = await self._db(self._finish_sync, batch)
        except sa.exc.SQLAlchemyError:
            log.exception("recording %d attempts failed; will retry", len(batch))
            self._done[:0] = batch
            await asyncio.sleep(self.config.poll_interval_s)
            if self._flush_wanted is not None:
                self._flush_wanted.set()
            return
        for f in batch:
            self._held.pop(f.claimed.id, None)
        self.attempts_recorded += len(recorded)
        if any(outbox.unblocks_successor(f) for f in recorded):
            self._poke(True)  # claim the successor now, not at the next poll (NOTIFY tells the others)
        if len(recorded) < len(batch):
            log.warning("%d attempts finished after their lease was lost", len(batch) - len(recorded))
        if self.metrics is not None:
            self.metrics.observe_many(recorded)
        if log.isEnabledFor(logging.INFO):
            for f in recorded:
                log.info(
                    "attempt transactionid=%s attempt=%d status=%s outcome=%s verdict=%s duration_ms=%.1f",
                    f.claimed.transactionid,
                    f.claimed.attempt,
                    f.result.status,
                    outcome_label(f.result),
                    f.decision.verdict.value,
                    f.result.duration_s * 1000,
                )
        if any(f.decision.disable_endpoint for f in recorded) and self.metrics is not None:
            self.metrics.endpoint_disables.labels("gone").inc()

    def _finish_sync(self, batch: list[Finished]) -> list[Finished]:
        with self.engine.begin() as conn:
            return outbox.finish(conn, batch, now=self._clock())

    # --- background ------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_s / 3)
            leases = sorted({c.lease for c in self._held.values()})
            if not leases:
                continue
            try:
                await self._db(self._extend_sync, leases)
            except sa.exc.SQLAlchemyError:
                log.exception("extending %d leases failed", len(leases))

    def _extend_sync(self, leases: list[str]) -> None:
        with self.engine.begin() as conn:
            extend_leases(conn, leases, now=self._clock(), lease_s=self.config.lease_s)

    async def _housekeeping_loop(self) -> None:
        last_health = -float("inf")
        started_at = self._clock()
        while True:
            now_s = time.monotonic()
            try:
                await self._db(self._beat_sync, started_at)
                if now_s - last_health >= self.config.health_interval_s:
                    last_health = now_s
                    await self._db(self._health_sync)
                    if self.config.mailer is not None:  # e-mail waits on the network: not a db thread
                        await asyncio.to_thread(
                            notify.notify, self.engine, self.config.mailer, now=self._clock()
                        )
                if self.metrics is not None:
                    await self._db(self._metrics_sync)
            except sa.exc.SQLAlchemyError:
                log.exception("housekeeping failed")
            await asyncio.sleep(min(self.config.metrics_interval_s, self.config.health_interval_s))

    def _beat_sync(self, started_at: datetime) -> None:
        with self.engine.begin() as conn:
            presence.beat(conn, self.config.owner, started_at=started_at, now=self._clock())

    def _health_sync(self) -> None:
        with self.engine.begin() as conn:
            health.sweep(conn, now=self._clock(), metrics=self.metrics)

    def _metrics_sync(self) -> None:
        assert self.metrics is not None
        with self.engine.connect() as conn:
            self.metrics.refresh(conn, now=self._clock())

    async def _render_loop(self, renderer: Callable[[datetime], int]) -> None:
        """Render deliveries whose delay ends, batch after batch while there are any, else every poll
        interval; what it renders is claimable at once (this process is poked, NOTIFY wakes others)."""
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                taken = await self._db(renderer, self._clock())
            except Exception:  # a bad row or a lost connection must not stop this process's sending
                log.exception("rendering delayed deliveries failed; retrying after the poll interval")
                taken = 0
            if taken:
                self._poke(True)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.config.poll_interval_s)

    async def _listen_loop(self) -> None:
        """PostgreSQL LISTEN on a dedicated connection: an enqueue's commit wakes the claim loop."""
        import psycopg

        url = libpq_url(self.engine)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as aconn:
                    await aconn.execute(f"LISTEN {outbox.NOTIFY_CHANNEL}")
                    async for _ in aconn.notifies():
                        self._poke(True)
            except psycopg.Error:
                log.warning("LISTEN connection lost; polling until it is back", exc_info=True)
                await asyncio.sleep(self.config.poll_interval_s)

    # --- shutdown --------------------------------------------------------------------------------

    async def _shutdown(self, helpers: list[asyncio.Task[None]]) -> None:
        """Let in-flight attempts finish (up to the grace period), record them, release the rest."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=self.config.shutdown_grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._gate is not None:
            await self._gate.close()
        for task in helpers:
            task.cancel()
        for task in helpers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush()
        try:
            await self._db(self._gone_sync)
        except sa.exc.SQLAlchemyError:
            log.warning("could not note this dispatcher's stop; it is forgotten after a minute anyway")
        left = list(self._held.values())
        if left:
            try:
                await self._db(self._release_sync, left)
            except sa.exc.SQLAlchemyError:
                log.exception("releasing %d leases failed; they will expire", len(left))
            self._held.clear()

    def _gone_sync(self) -> None:
        with self.engine.begin() as conn:
            presence.gone(conn, self.config.owner)

    def _release_sync(self, left: list[Claimed]) -> None:
        with self.engine.begin() as conn:
            release(conn, left, now=self._clock())
