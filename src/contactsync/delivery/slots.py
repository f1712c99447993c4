"""Per-endpoint throttles of the dispatcher: an in-flight cap and an optional rate limit per endpoint.

spec/delivery.md asks that both hold across every dispatcher process. On SQLite there is one
process (single writer), so :class:`LocalGate` (an asyncio semaphore and a token bucket) is exact.
On PostgreSQL :class:`SharedGate` leases the endpoint's slots and takes its tokens from the
database (db/shared_limits.py), batched: attempts that wait are served together by one
transaction per tick for every endpoint (release ended slots, take slots, take tokens), and a
slot whose attempt ends is handed straight to the next waiting attempt of the same endpoint for
up to ``turn_s`` before it goes back, so a busy endpoint costs no round trip per delivery and
other processes still get their turn. Slot leases expire unless renewed, so a process that dies
strands its slots for ``lease_s`` at most. Tokens are asked for only by attempts that already hold
a slot, and spent at once, so the shared bucket bounds starts, not grants.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from contactsync.db import shared_limits
from contactsync.db.shared_limits import Grant, SlotWant, TokenWant
from contactsync.delivery import presence
from contactsync.delivery.endpoints import EndpointKey, Limits
from contactsync.delivery.throttle import TokenBucket

log = logging.getLogger("contactsync.delivery.slots")

RunDb = Callable[..., Awaitable[Any]]
"""Runs a blocking function with arguments on the dispatcher's database thread(s)."""


class Gate(Protocol):
    """Admits one attempt to an endpoint when its in-flight cap and rate limit allow."""

    def admit(self, key: EndpointKey, limits: Limits) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def close(self) -> None: ...


def create_gate(
    engine: sa.Engine, *, run_db: RunDb, holder: str, lease_s: float = 30.0, turn_s: float = 1.0
) -> Gate:
    """The gate for ``engine``'s database: shared where several dispatcher processes may run."""
    if shared_limits.supported(engine):
        return SharedGate(engine, run_db=run_db, holder=holder, lease_s=lease_s, turn_s=turn_s)
    return LocalGate()


class LocalGate:
    """This process's semaphore and token bucket per endpoint: exact when it is the only sender."""

    def __init__(self) -> None:
        self._slots: dict[EndpointKey, asyncio.Semaphore] = {}
        self._buckets: dict[EndpointKey, TokenBucket] = {}

    @contextlib.asynccontextmanager
    async def admit(self, key: EndpointKey, limits: Limits) -> AsyncIterator[None]:
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(limits.max_in_flight)
        async with slots:
            if limits.rate_limit_per_s:
                bucket = self._buckets.get(key)
                if bucket is None or bucket.rate_per_s != limits.rate_limit_per_s:
                    bucket = self._buckets[key] = TokenBucket(limits.rate_limit_per_s)
                await bucket.acquire()
            yield

    async def close(self) -> None:
        return None


@dataclass(slots=True)
class _Slot:
    number: int
    turn_ends: float
    """Monotonic time until which it is handed from attempt to attempt here without a round trip."""


@dataclass(slots=True)
class _Endpoint:
    cap: int
    rate_per_s: float | None
    slot_waiters: deque[asyncio.Future[_Slot]] = field(default_factory=deque)
    token_waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    slots_at: float = 0.0
    """Monotonic time before which the database is not asked again for this endpoint's slots."""
    tokens_at: float = 0.0
    """Likewise for its tokens (when the bucket will have refilled)."""


class SharedGate:
    """Slots and tokens leased from the database, so the limits hold over every process."""

    TICK_S = 0.005
    """How long a tick waits for more requests after the first, to serve them in one transaction."""
    RETRY_S = 0.05
    """How soon an endpoint whose slots are all taken elsewhere is asked again (plus jitter)."""
    SPARE_TURN_S = 0.25
    """The turn of a slot beyond this process's fair share (see :meth:`_share`): short, so that other
    processes waiting for the endpoint get it back soon."""
    TOKEN_BATCH_S = 0.1
    """An endpoint short of tokens asks again when about this many seconds' worth have refilled."""

    def __init__(
        self, engine: sa.Engine, *, run_db: RunDb, holder: str, lease_s: float, turn_s: float
    ) -> None:
        self.engine = engine
        self.holder = holder[:120]
        self.lease_s = lease_s
        self.turn_s = turn_s
        self._run_db = run_db
        self._endpoints: dict[EndpointKey, _Endpoint] = {}
        self._releasing: dict[EndpointKey, list[_Slot]] = {}
        self._held: dict[EndpointKey, set[int]] = {}
        self._lost: set[tuple[EndpointKey, int]] = set()
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._rng = random.Random()
        self._live = 1
        self.transactions = 0
        """Transactions run so far (each serves every endpoint waiting at one tick)."""

    # --- what an attempt sees --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def admit(self, key: EndpointKey, limits: Limits) -> AsyncIterator[None]:
        ep = self._endpoint(key, limits)
        slot = await self._slot(key, ep)
        try:
            if ep.rate_per_s:
                await self._token(ep)
            yield
        finally:
            self._give_back(key, ep, slot)

    def _endpoint(self, key: EndpointKey, limits: Limits) -> _Endpoint:
        ep = self._endpoints.get(key)
        if ep is None:
            ep = self._endpoints[key] = _Endpoint(limits.max_in_flight, limits.rate_limit_per_s)
        ep.cap, ep.rate_per_s = limits.max_in_flight, limits.rate_limit_per_s
        return ep

    async def _slot(self, key: EndpointKey, ep: _Endpoint) -> _Slot:
        reusable = self._releasing.get(key)
        while reusable:  # ended moments ago and not yet given back: no round trip
            slot = reusable.pop()
            if self._young(slot, ep):
                return slot
            reusable.append(slot)
            break
        fut: asyncio.Future[_Slot] = asyncio.get_running_loop().create_future()
        ep.slot_waiters.append(fut)
        self._want()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._give_back(key, ep, fut.result())
            raise

    async def _token(self, ep: _Endpoint) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ep.token_waiters.append(fut)
        self._want()
        await fut

    def _young(self, slot: _Slot, ep: _Endpoint) -> bool:
        return slot.number < ep.cap and time.monotonic() < slot.turn_ends

    def _share(self, ep: _Endpoint) -> int:
        """This process's fair share of the endpoint's cap: the cap over the processes alive. Slots
        within it are kept for long turns; free slots beyond it are taken too (no cap goes unused
        when the others have nothing for the endpoint) but given back after short turns."""
        return max(-(-ep.cap // max(self._live, 1)), 1)

    def _give_back(self, key: EndpointKey, ep: _Endpoint, slot: _Slot) -> None:
        if (key, slot.number) in self._lost:  # its lease expired and may be someone else's now
            self._lost.discard((key, slot.number))
            self._held.get(key, set()).discard(slot.number)
            return
        if self._young(slot, ep):
            while ep.slot_waiters:
                waiter = ep.slot_waiters.popleft()
                if not waiter.done():
                    waiter.set_result(slot)
                    return
        self._releasing.setdefault(key, []).append(slot)
        self._want()

    def _want(self) -> None:
        self._wanted.set()
        if self._task is None and not self._closing:
            self._task = asyncio.get_running_loop().create_task(self._serve(), name="endpoint-slots")

    # --- the ticks -------------------------------------------------------------------------------

    async def _serve(self) -> None:
        next_extend = time.monotonic()  # the first tick also counts the processes alive
        while not self._closing:
            now = time.monotonic()
            due = [next_extend] if any(self._held.values()) else []
            for ep in self._endpoints.values():
                if _alive(ep.slot_waiters):
                    due.append(ep.slots_at)
                if _alive(ep.token_waiters):
                    due.append(ep.tokens_at)
            timeout = max(min(due) - now, 0.0) if due else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), timeout=timeout)
            if self._closing:
                return
            self._wanted.clear()
            await asyncio.sleep(self.TICK_S)
            now = time.monotonic()
            extend = now >= next_extend
            if extend:
                next_extend = now + self.lease_s / 3
            try:
                await self._tick(now, extend=extend)
            except Exception:  # attempts wait on this loop: it must outlive a lost connection or a bug
                log.warning("endpoint slots: a tick failed; trying again", exc_info=True)
                await asyncio.sleep(self.RETRY_S)
                self._wanted.set()

    async def _tick(self, now: float, *, extend: bool) -> None:
        releasing, self._releasing = self._releasing, {}
        release = [(k, s.number) for k, slots in releasing.items() for s in slots]
        slot_wants: list[SlotWant] = []
        token_wants: list[TokenWant] = []
        for key, ep in self._endpoints.items():
            _prune(ep.slot_waiters)
            _prune(ep.token_waiters)
            waiting = sum(not w.done() for w in ep.slot_waiters)
            want = 0
            if waiting and key in releasing:  # turns ended: take back only the fair share at once,
                staying = len(self._held.get(key, ())) - len(releasing[key])  # the rest after the others
                want = min(waiting, max(self._share(ep) - staying, 0))
                if want < waiting:
                    ep.slots_at = max(ep.slots_at, now + self.RETRY_S * (1 + self._rng.random()))
            elif waiting and ep.slots_at <= now:
                want = min(waiting, ep.cap)
            if want:
                slot_wants.append(SlotWant(key, ep.cap, want))
            if ep.token_waiters and ep.tokens_at <= now and ep.rate_per_s:
                burst = max(ep.rate_per_s, 1.0)
                token_wants.append(TokenWant(key, ep.rate_per_s, burst, len(ep.token_waiters)))
        if not (release or slot_wants or token_wants or extend):
            return
        try:
            taken, grants, kept, live = await self._run_db(
                self._exchange_sync, release, slot_wants, token_wants, extend
            )
        except BaseException:
            for key, slots in releasing.items():  # still ours: give them back next tick
                self._releasing.setdefault(key, [])[:0] = slots
            raise
        for key in releasing:
            held = self._held.get(key)
            if held is not None:
                held.difference_update(s.number for s in releasing[key])
        if kept is not None:
            self._forget_lost(kept)
        if live is not None:
            self._live = live
        self._hand_out(taken, now)
        self._spend(grants, token_wants, now)
        for asked in slot_wants:
            ep = self._endpoints[EndpointKey(*asked.key)]
            if _alive(ep.slot_waiters):  # all taken elsewhere: ask again shortly
                ep.slots_at = now + self.RETRY_S * (1 + self._rng.random())

    def _exchange_sync(
        self,
        release: list[tuple[shared_limits.Key, int]],
        slot_wants: list[SlotWant],
        token_wants: list[TokenWant],
        extend: bool,
    ) -> tuple[
        list[tuple[shared_limits.Key, int]], dict[shared_limits.Key, Grant], set[Any] | None, int | None
    ]:
        """One transaction: give back ended slots, take slots and tokens; now and then renew the
        leases held and count the processes alive."""
        kept = live = None
        self.transactions += 1
        with self.engine.begin() as conn:
            shared_limits.release_slots(conn, release, holder=self.holder)
            taken = shared_limits.take_slots(conn, slot_wants, holder=self.holder, lease_s=self.lease_s)
            grants = shared_limits.take_tokens(conn, token_wants)
            if extend:
                kept = shared_limits.extend_slots(conn, holder=self.holder, lease_s=self.lease_s)
                live = shared_limits.live_dispatchers(conn, alive_within_s=presence.ALIVE_WITHIN_S)
        return taken, grants, kept, live

    def _hand_out(self, taken: list[tuple[shared_limits.Key, int]], now: float) -> None:
        for raw, number in taken:
            key = EndpointKey(*raw)
            held = self._held.setdefault(key, set())
            ep = self._endpoints[key]
            spare = len(held) >= self._share(ep)
            held.add(number)
            slot = _Slot(number, now + (min(self.SPARE_TURN_S, self.turn_s) if spare else self.turn_s))
            while ep.slot_waiters:
                waiter = ep.slot_waiters.popleft()
                if not waiter.done():
                    waiter.set_result(slot)
                    break
            else:  # its attempt went away meanwhile
                self._releasing.setdefault(key, []).append(slot)
                self._wanted.set()

    def _spend(self, grants: dict[shared_limits.Key, Grant], wants: list[TokenWant], now: float) -> None:
        for want in wants:
            key = EndpointKey(*want.key)
            ep = self._endpoints[key]
            grant = grants.get(want.key, Grant(0, 0.0))
            for _ in range(grant.granted):
                while ep.token_waiters and ep.token_waiters[0].done():
                    ep.token_waiters.popleft()
                if not ep.token_waiters:
                    break
                ep.token_waiters.popleft().set_result(None)
            waiting = sum(not w.done() for w in ep.token_waiters)
            if waiting:  # come back when the bucket holds a batch again (not a round trip per token)
                batch = min(waiting, max(1.0, want.rate_per_s * self.TOKEN_BATCH_S))
                wait_s = max(batch - grant.left, 0.0) / want.rate_per_s
                ep.tokens_at = now + max(wait_s, self.TICK_S)

    def _forget_lost(self, kept: set[tuple[shared_limits.Key, int]]) -> None:
        for key, numbers in self._held.items():
            for number in numbers - {n for k, n in kept if k == tuple(key)}:
                log.warning("slot %d of %s expired while held: its attempt finishes anyway", number, key)
                self._lost.add((key, number))

    async def close(self) -> None:
        """Stop ticking and give back every slot still held (a crash leaves them to expire).

        The loop is told to stop and woken, not cancelled: on Python 3.11 a cancellation that lands
        as ``wait_for`` completes can be swallowed, which held shutdown until the next timeout."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            self._wanted.set()
            _, stuck = await asyncio.wait({task}, timeout=self.lease_s)  # a tick on a dead database
            for late in stuck:
                late.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await late
        if any(self._held.values()) or self._releasing:
            try:
                await self._run_db(self._release_all_sync)
            except sa.exc.SQLAlchemyError:
                log.warning("could not give back endpoint slots; they expire in %.0f s", self.lease_s)
        self._held.clear()
        self._releasing.clear()

    def _release_all_sync(self) -> None:
        with self.engine.begin() as conn:
            shared_limits.release_all(conn, holder=self.holder)


def _alive(waiters: deque[asyncio.Future[Any]]) -> bool:
    return any(not w.done() for w in waiters)


def _prune(waiters: deque[asyncio.Future[Any]]) -> None:
    while waiters and waiters[0].done():
        waiters.popleft()
