"""Handlers: what runs after the acknowledgement, each tracked and retried on its own.

A handler is any callable taking the validated :class:`SyncPayload` (sync or ``async``); raising
means "try again later" with the retry schedule of outbound delivery. Each configured handler has
its own worker task and its own row per inbox entry (``listener_handler_runs``), so a CRM that is
down keeps its own backlog while the SQL projection stays current.

Handlers are named in settings by entry point (group ``contactsync.handlers``) or dotted path
(``package.module:attr`` or ``package.module.attr``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any, Protocol, cast

import sqlalchemy as sa

from contactsync.db import retention
from contactsync.db.backend import backend_of
from contactsync.db.engine import write_transaction
from contactsync.db.listener import handler_attempts, handler_runs, in_state, inbox
from contactsync.db.retention import Retention
from contactsync.delivery.retry import DEFAULT_SCHEDULE_S, Outcome, Verdict, backoff_s, decide
from contactsync.errors import ConfigError, HandlerError, NotFoundError, WireError
from contactsync.listener.liveness import Liveness
from contactsync.wire.payload import SyncPayload

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "contactsync.handlers"
STATE_PENDING = "pending"
STATE_DONE = "done"
STATE_FAILED = "failed"
DEFAULT_LEASE_S = 300.0
"""A run claimed by a process that then died becomes due again after this long."""
ERROR_TEXT_CHARS = 2000
DEFAULT_STALL_S = 60.0
"""A worker without progress for this long is reported stalled (503); one without a beat is replaced."""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One outbound request a handler made (a handler may return one, or raise it on HandlerError)."""

    ok: bool
    status: int | None
    duration_ms: int
    target: str
    detail: str


class Handler(Protocol):
    """The customer's "backend service": called once per accepted sync (at least once on retries).

    A handler that calls out may return an :class:`AttemptRecord` (or raise it on a ``HandlerError``),
    which the runner keeps in the run's attempt log.
    """

    def __call__(self, payload: SyncPayload, /) -> Awaitable[AttemptRecord | None] | AttemptRecord | None: ...


def load_handler(spec: str) -> Handler:
    """Resolve an entry-point name or a dotted path to a handler callable."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == spec:
            return cast(Handler, ep.load())
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(
            f"handler {spec!r} is neither an entry point of {ENTRY_POINT_GROUP} nor a dotted path"
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load handler {spec!r}: {exc}") from exc
    if not callable(target):
        raise ConfigError(f"handler {spec!r} is not callable")
    return cast(Handler, target)


async def close_handlers(handlers: Mapping[str, Handler]) -> None:
    """Release what handlers hold (e.g. the CRM forwarders' connection pools) when the process stops."""
    for handler in handlers.values():
        aclose = getattr(handler, "aclose", None)
        if callable(aclose):
            await aclose()
        close = getattr(handler, "close", None)
        if callable(close):
            close()


@dataclass(frozen=True, slots=True)
class Run:
    """One claimed handler run with the raw request it is about."""

    id: int
    inbox_id: int
    attempts: int
    received_at_ms: int
    transactionid: str
    method: str
    content_type: str
    query: str
    body: bytes


Parser = Callable[[Run], SyncPayload]
"""Rebuilds the payload from a stored request (the listener's own decoder and limits)."""

Result = tuple[Run, BaseException | None]


@dataclass
class _Hand:
    """The runs a worker holds: claimed, being handled now, handled but not yet recorded."""

    claimed: list[Run] = field(default_factory=list)
    current: tuple[Run, ...] = ()
    results: list[Result] = field(default_factory=list)
    records: list[tuple[Run, AttemptRecord]] = field(default_factory=list)
    """Outbound attempts the handled runs reported, recorded with their results."""

    def take(self, runs: list[Run]) -> None:
        self.claimed, self.current, self.results, self.records = runs, (), [], []

    def drop(self) -> None:
        self.take([])

    def left(self, error: BaseException) -> tuple[list[Result], list[Run]]:
        """After the worker was lost: what to record (its results, ``error`` for the runs it was in
        the middle of) and what to give back untouched."""
        seen = {run.id for run, _ in self.results} | {run.id for run in self.current}
        record = self.results + [(run, error) for run in self.current]
        return record, [run for run in self.claimed if run.id not in seen]


_TAKE = (
    sa.update(handler_runs)
    .where(
        handler_runs.c.id == sa.bindparam("rid"),
        handler_runs.c.state == STATE_PENDING,
        handler_runs.c.next_attempt_at_ms == sa.bindparam("due"),
    )
    .values(attempts=handler_runs.c.attempts + 1, next_attempt_at_ms=sa.bindparam("lease_until"))
)
"""Lease one selected run (built once; a claimed batch leases its runs in one executemany)."""


_RUN_COLUMNS = (
    handler_runs.c.id,
    handler_runs.c.inbox_id,
    handler_runs.c.attempts,
    handler_runs.c.received_at_ms,
)
_ENTRY_COLUMNS = (inbox.c.transactionid, inbox.c.method, inbox.c.content_type, inbox.c.query, inbox.c.body)


def due_runs(name: str, now_ms: int, limit: int) -> sa.Select[tuple[int]]:
    """The ids of the ``limit`` runs of handler ``name`` longest due at ``now_ms``: what a claim takes.

    In due order, the order of the index of due runs: the pick reads ``limit`` entries however long the
    backlog (in id order a generic plan sorted the whole backlog for each batch)."""
    return (
        sa.select(handler_runs.c.id)
        .where(*_due(name, now_ms))
        .order_by(handler_runs.c.next_attempt_at_ms)
        .limit(limit)
    )


def _due(name: str, now: int) -> tuple[sa.ColumnElement[bool], ...]:
    return (handler_runs.c.handler == name, in_state(STATE_PENDING), handler_runs.c.next_attempt_at_ms <= now)


def _run_of(run: Any, entry: Any, attempts: int) -> Run:
    """A claimed run from its row and its inbox entry's (one joined row may be both)."""
    return Run(
        id=run.id,
        inbox_id=run.inbox_id,
        attempts=attempts,
        received_at_ms=run.received_at_ms,
        transactionid=entry.transactionid,
        method=entry.method,
        content_type=entry.content_type,
        query=entry.query,
        body=bytes(entry.body),
    )


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


class Runner:
    """Worker tasks, one per handler, draining due runs from the inbox database, and their supervisor.

    A worker survives its database: an error in claiming or recording is logged and retried after
    a capped backoff, results not yet recorded are kept and recorded first. The supervisor replaces
    a worker that died or stopped beating for ``stall_s`` (a handler that never returns), recording
    the run it was stuck in as a failed attempt.
    """

    def __init__(
        self,
        engine: sa.Engine,
        handlers: Mapping[str, Handler],
        *,
        parse: Parser,
        schedule_s: Sequence[float] = DEFAULT_SCHEDULE_S,
        poll_interval_s: float = 1.0,
        batch_size: int = 100,
        lease_s: float = DEFAULT_LEASE_S,
        stall_s: float = DEFAULT_STALL_S,
        backoff_cap_s: float = 5.0,
        clock_ms: Callable[[], int] = _now_ms,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_result: Callable[[str, bool, int], None] | None = None,
        write_lock: AbstractContextManager[Any] | None = None,
        yield_to: Callable[[], bool] | None = None,
        max_defer_s: float = 0.25,
        defer_share: float = 0.25,
        retention: Retention | None = None,
        retention_interval_s: float = 3600.0,
    ) -> None:
        self._engine = engine
        self._retention = retention
        self._retention_interval_s = retention_interval_s
        self._pruner: asyncio.Task[None] | None = None
        self._prune_stop = asyncio.Event()
        self._yield_to = yield_to
        self._max_defer_s = max_defer_s
        self._defer_gap_s = max_defer_s * (1 - defer_share) / defer_share if defer_share > 0 else float("inf")
        """While a backlog lasts, a worker defers only after this much working time since its last
        deferral: at most ``defer_share`` of its time goes to acknowledgements, so under a sustained load
        it keeps pace instead of waiting ``max_defer_s`` before every batch."""
        self._write_lock = write_lock or contextlib.nullcontext()
        self.handlers = dict(handlers)
        self._parse = parse
        self._schedule_s = tuple(schedule_s)
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._lease_ms = int(lease_s * 1000)
        if stall_s <= poll_interval_s + max_defer_s:
            raise ConfigError(  # an idle worker shows progress once per poll: a shorter threshold flaps
                f"the handler stall threshold ({stall_s} s) must exceed "
                f"the poll interval ({poll_interval_s} s) by {max_defer_s} s"
            )
        self.stall_s = stall_s
        self._backoff_cap_s = backoff_cap_s
        self._clock_ms = clock_ms
        self._monotonic = self.monotonic = monotonic
        self._rng = rng or random.Random()
        self._on_result = on_result
        self._wake = {name: asyncio.Event() for name in self.handlers}
        started = monotonic()
        self.liveness = {name: Liveness(beat_s=started, progress_s=started) for name in self.handlers}
        self._hands = {name: _Hand() for name in self.handlers}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for name in self.handlers:
            self._spawn(name)
        self._supervisor = asyncio.create_task(self._supervise(), name="handler-supervisor")
        if self._retention is not None:  # finished inbox entries older than their horizon
            pruning = retention.keep_pruning(
                self._engine,
                self._retention,
                side="listener",
                interval_s=self._retention_interval_s,
                clock=lambda: datetime.fromtimestamp(self._clock_ms() / 1000, UTC).replace(tzinfo=None),
                stop=self._prune_stop,
                lock=lambda: self._write_lock,
            )
            self._pruner = asyncio.create_task(pruning, name="retention")

    def _spawn(self, name: str) -> None:
        self._hands[name] = _Hand()
        self._tasks[name] = asyncio.create_task(self._work(name, self.handlers[name]), name=f"handler-{name}")

    async def stop(self, *, grace_s: float = 30.0) -> None:
        """Let each worker finish the run in hand (its database work runs in a thread), then stop."""
        self._stopping = True
        self._prune_stop.set()
        if self._pruner is not None:
            await self._pruner  # returns after the batch in hand
            self._pruner = None
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        for event in self._wake.values():
            event.set()
        tasks = list(self._tasks.values())
        _, late = await asyncio.wait(tasks, timeout=grace_s) if tasks else (set(), set())
        for task in late:
            task.cancel()
        for name, outcome in zip(
            self._tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True
        ):
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                log.error("handler %s worker had failed: %r", name, outcome)
        self._tasks = {}

    def workers(self) -> dict[str, Liveness]:
        """Each worker's liveness, as ``/health`` reports it."""
        for name, task in self._tasks.items():
            self.liveness[name].alive = not task.done()
        return self.liveness

    def wake(self, _stored: int = 0) -> None:
        """Tell every worker that new runs are due; safe to call from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for event in self._wake.values():
            loop.call_soon_threadsafe(event.set)

    async def _work(self, name: str, handler: Handler) -> None:
        event = self._wake[name]
        live = self.liveness[name]
        hand = self._hands[name]
        backlog = False
        deferred_at = float("-inf")
        while not self._stopping:
            event.clear()
            live.beat(self._monotonic())
            try:
                if not backlog or self._monotonic() - deferred_at >= self._defer_gap_s:
                    await self._defer()
                    deferred_at = self._monotonic()
                if hand.results:  # recording failed last time: record before claiming more
                    await self._save(name, hand)
                runs = await asyncio.to_thread(self.claim, name)
                self._progressed(name, live)
                if runs:
                    hand.take(runs)
                    await self._run_batch(name, handler, runs, hand)
            except Exception as exc:  # the database (or a batch handler's bug): back off, then resume
                failures = live.failed(self._monotonic(), exc)
                wait_s = backoff_s(failures, self._rng, cap_s=self._backoff_cap_s)
                if failures == 1:
                    log.exception("handler %s: worker failed; retrying in %.2f s", name, wait_s)
                else:
                    log.warning(
                        "handler %s: failure %d in a row (%s); retrying in %.2f s",
                        name,
                        failures,
                        exc,
                        wait_s,
                    )
                await self._rest(live, event, wait_s)
                continue
            backlog = len(runs) >= self._batch_size
            if not backlog:
                await self._rest(live, event, self._poll_interval_s)

    def _progressed(self, name: str, live: Liveness) -> None:
        ended = live.progressed(self._monotonic())
        if ended:
            log.warning("handler %s: worker recovered after %d failures in a row", name, ended)

    async def _rest(self, live: Liveness, event: asyncio.Event, wait_s: float) -> None:
        """Sleep up to ``wait_s``, or until woken (new runs, or stop); a worker at rest is not silent."""
        live.beat(self._monotonic() + wait_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), wait_s)

    async def _supervise(self) -> None:
        """Replace workers that died or stopped beating; checks a few times per ``stall_s``."""
        check_s = max(min(self.stall_s / 4, 1.0), 0.01)
        settling: set[asyncio.Task[None]] = set()
        while not self._stopping:
            await asyncio.sleep(check_s)
            for name, task in list(self._tasks.items()):
                live = self.liveness[name]
                silent_s = self._monotonic() - live.beat_s
                if task.done():
                    failure = None if task.cancelled() else task.exception()
                    why = f"worker died: {failure!r}" if failure else "worker was cancelled"
                elif silent_s > self.stall_s:
                    why = f"worker stalled: no sign of life for {silent_s:.1f} s"
                    task.cancel()
                else:
                    continue
                if self._stopping:
                    return
                log.error("handler %s: %s; starting a new one", name, why)
                lost = self._hands[name]
                live.restarted(self._monotonic(), why)
                self._spawn(name)
                # settled aside: a hung thread may hold the database (or its lock) the recording needs
                settle = asyncio.create_task(self._recover(name, lost, HandlerError(why)))
                settling.add(settle)
                settle.add_done_callback(settling.discard)

    async def _recover(self, name: str, lost: _Hand, error: HandlerError) -> None:
        """Record what a lost worker held: its results, ``error`` for the runs it was stuck in; the
        runs it had not started go back. If the database refuses, their leases expire instead."""
        record, untouched = lost.left(error)
        try:
            if record:
                await asyncio.to_thread(self._record, record)
            if untouched:
                await asyncio.to_thread(self._release, untouched)
        except Exception:
            log.exception(
                "handler %s: could not settle the runs of the lost worker; their leases will expire", name
            )

    async def _defer(self) -> None:
        """Acknowledgements first: while requests are being stored, wait (at most ``max_defer_s``).

        Handlers share the process (and the GIL) with the request path; during a burst they fall a
        little behind and catch up after, instead of halving the rate at which requests are acked.
        Under a sustained load a worker with a backlog defers only once per ``defer_share`` of its
        time (see ``_work``), so the lag stays bounded.
        """
        if self._yield_to is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_defer_s
        while self._yield_to() and not self._stopping and loop.time() < deadline:
            await asyncio.sleep(0.005)

    async def _run_batch(self, name: str, handler: Handler, runs: list[Run], hand: _Hand) -> None:
        """Run a claimed batch and record every outcome in one transaction."""
        live = self.liveness[name]
        batch_handler = getattr(handler, "handle_batch", None)
        if callable(batch_handler):
            payloads: list[SyncPayload] = []
            parsed: list[Run] = []
            for run in runs:
                try:
                    payloads.append(self._parse(run))
                    parsed.append(run)
                except Exception as exc:
                    hand.results.append((run, exc))
            if payloads:
                hand.current = tuple(parsed)
                try:
                    errors: list[BaseException | None] = list(
                        await asyncio.to_thread(batch_handler, payloads)
                    )
                except Exception as exc:  # a batch handler's own failure is each run's failure
                    errors = [exc] * len(parsed)
                hand.results += list(zip(parsed, errors, strict=True))
                hand.current = ()
        else:
            for position, run in enumerate(runs):
                if self._stopping:
                    await asyncio.to_thread(self._release, runs[position:])
                    hand.claimed = hand.claimed[:position]
                    break
                hand.current = (run,)
                error, record = await self._attempt(handler, run)
                hand.results.append((run, error))
                if record is not None:
                    hand.records.append((run, record))
                hand.current = ()
                live.beat(self._monotonic())
        await self._save(name, hand)

    async def _save(self, name: str, hand: _Hand) -> None:
        """Record the hand's results (kept if the database refuses, to be recorded on the next round)."""
        results = hand.results
        await asyncio.to_thread(self._record, results, hand.records)
        hand.drop()
        self._progressed(name, self.liveness[name])
        if self._on_result is not None:
            now = self._clock_ms()
            for run, error in results:
                self._on_result(name, error is None, now - run.received_at_ms)

    def _transaction(self) -> AbstractContextManager[sa.Connection]:
        return write_transaction(self._engine, self._write_lock)

    def claim(self, name: str) -> list[Run]:
        """Lease up to one batch of due runs of ``name`` (optimistically, so processes can share them)."""
        now = self._clock_ms()
        with self._transaction() as conn:
            backend = backend_of(conn)
            if backend.update_returning:
                with backend.planned_on_indexes(conn):
                    return self._claim_returning(conn, name, now)
            rows = conn.execute(
                sa.select(*_RUN_COLUMNS, handler_runs.c.next_attempt_at_ms, *_ENTRY_COLUMNS)
                .join(inbox, inbox.c.id == handler_runs.c.inbox_id)
                .where(*_due(name, now))
                .order_by(handler_runs.c.next_attempt_at_ms)
                .limit(self._batch_size)
                .with_for_update(skip_locked=True, of=handler_runs)
            ).all()
            if not rows:
                return []
            leases = [
                {"rid": r.id, "due": r.next_attempt_at_ms, "lease_until": now + self._lease_ms} for r in rows
            ]
            if backend.multi_rowcount:
                if conn.execute(_TAKE, leases).rowcount != len(rows):
                    # the rows are locked (FOR UPDATE, or SQLite's write lock), so this should not happen;
                    # if it does, claim nothing rather than guess which rows this process now holds
                    conn.rollback()
                    return []
            else:
                rows = [
                    r for r, lease in zip(rows, leases, strict=True) if conn.execute(_TAKE, lease).rowcount
                ]
            return [_run_of(row, row, row.attempts + 1) for row in rows]

    def _claim_returning(self, conn: sa.Connection, name: str, now: int) -> list[Run]:
        """The claim in two statements whatever the batch size: lease the picked runs in one
        ``UPDATE … RETURNING`` (the pick locks them, skipping rows another process holds), then read
        their requests (a lease per row was one statement per run, the database's largest cost)."""
        picked = due_runs(name, now, self._batch_size).with_for_update(skip_locked=True)
        leased = conn.execute(
            sa.update(handler_runs)
            .where(handler_runs.c.id.in_(picked.scalar_subquery()), handler_runs.c.state == STATE_PENDING)
            .values(attempts=handler_runs.c.attempts + 1, next_attempt_at_ms=now + self._lease_ms)
            .returning(*_RUN_COLUMNS)
        ).all()
        if not leased:
            return []
        entries = {
            row.id: row
            for row in conn.execute(
                sa.select(inbox.c.id, *_ENTRY_COLUMNS).where(inbox.c.id.in_([r.inbox_id for r in leased]))
            )
        }
        return [
            _run_of(run, entries[run.inbox_id], run.attempts) for run in sorted(leased, key=lambda r: r.id)
        ]

    async def execute(self, name: str, handler: Handler, run: Run) -> bool:
        """Run ``handler`` once for ``run`` and record the outcome; True on success."""
        hand = _Hand()
        hand.take([run])
        await self._run_batch(name, handler, [run], hand)
        return await asyncio.to_thread(self._state, run) == STATE_DONE

    def _state(self, run: Run) -> str:
        with self._engine.connect() as conn:
            query = sa.select(handler_runs.c.state).where(handler_runs.c.id == run.id)
            return str(conn.execute(query).scalar_one())

    async def _attempt(self, handler: Handler, run: Run) -> tuple[BaseException | None, AttemptRecord | None]:
        """Run ``handler`` for ``run``: the error it raised, and the outbound attempt it reported."""
        try:
            payload = self._parse(run)
            if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
                getattr(handler, "__call__", None)  # noqa: B004  (async callable objects)
            ):
                result: object = await cast(Awaitable[object], handler(payload))
            else:
                result = await asyncio.to_thread(handler, payload)
                if inspect.isawaitable(result):
                    result = await result
        except asyncio.CancelledError:
            raise
        except (Exception, SystemExit) as exc:  # sys.exit() in a handler fails the run, not the process
            record = getattr(exc, "attempt", None)
            return exc, record if isinstance(record, AttemptRecord) else None
        return None, result if isinstance(result, AttemptRecord) else None

    def _release(self, runs: Sequence[Run]) -> None:
        """Give back claimed runs not started (on shutdown), so a restart need not wait for the lease."""
        now = self._clock_ms()
        with self._transaction() as conn:
            for run in runs:
                conn.execute(
                    sa.update(handler_runs)
                    .where(handler_runs.c.id == run.id, handler_runs.c.state == STATE_PENDING)
                    .values(attempts=run.attempts - 1, next_attempt_at_ms=now)
                )

    def _record(
        self,
        outcomes: Sequence[tuple[Run, BaseException | None]],
        records: Sequence[tuple[Run, AttemptRecord]] = (),
    ) -> None:
        now = self._clock_ms()
        done = [run.id for run, error in outcomes if error is None]
        # by id, on indexes: a plan made while the runs table was small would scan it as it grows
        with self._transaction() as conn, backend_of(conn).planned_on_indexes(conn):
            if records:
                conn.execute(
                    sa.insert(handler_attempts),
                    [
                        {
                            "run_id": run.id,
                            "attempt": run.attempts,
                            "at_ms": now,
                            "ok": record.ok,
                            "status": record.status,
                            "duration_ms": record.duration_ms,
                            "target": record.target,
                            "detail": record.detail[:ERROR_TEXT_CHARS],
                        }
                        for run, record in records
                    ],
                )
            if done:
                conn.execute(
                    sa.update(handler_runs)
                    .where(handler_runs.c.id.in_(done))
                    .values(state=STATE_DONE, finished_at_ms=now, last_error=None)
                )
            for run, error in outcomes:
                if error is not None:
                    values = self._failure(run, error, now)
                    conn.execute(sa.update(handler_runs).where(handler_runs.c.id == run.id).values(**values))

    def _failure(self, run: Run, error: BaseException, now: int) -> dict[str, Any]:
        """The run's next state after ``error``: retry later (delivery policy) or failed for good."""
        outcome = (
            Outcome(status=error.status, headers=error.headers)
            if isinstance(error, HandlerError) and error.status is not None
            else Outcome(error=f"{type(error).__name__}: {error}")
        )
        decision = decide(
            run.attempts,
            outcome,
            datetime.fromtimestamp(now / 1000, UTC),
            schedule=self._schedule_s,
            rng=self._rng,
        )
        text = f"{decision.reason}: {error}"[:ERROR_TEXT_CHARS]
        if isinstance(error, WireError):
            # the stored request itself is unusable: retrying cannot help
            return {"state": STATE_FAILED, "finished_at_ms": now, "last_error": text}
        if decision.verdict is Verdict.RETRY and decision.next_attempt_at is not None:
            return {
                "next_attempt_at_ms": int(decision.next_attempt_at.timestamp() * 1000),
                "last_error": text,
            }
        return {"state": STATE_FAILED, "finished_at_ms": now, "last_error": text}


def replay(engine: sa.Engine, transactionid: str, handler: str, *, now_ms: int | None = None) -> None:
    """Run one inbox entry through ``handler`` again (creating its run if the handler is new)."""
    now = _now_ms() if now_ms is None else now_ms
    with engine.begin() as conn:
        entry = conn.execute(
            sa.select(inbox.c.id, inbox.c.received_at_ms).where(inbox.c.transactionid == transactionid)
        ).first()
        if entry is None:
            raise NotFoundError(f"no inbox entry with transactionid {transactionid}", field="transactionid")
        updated = conn.execute(
            sa.update(handler_runs)
            .where(handler_runs.c.inbox_id == entry.id, handler_runs.c.handler == handler)
            .values(
                state=STATE_PENDING, attempts=0, next_attempt_at_ms=now, finished_at_ms=None, last_error=None
            )
        )
        if updated.rowcount == 0:
            conn.execute(
                sa.insert(handler_runs).values(
                    inbox_id=entry.id,
                    handler=handler,
                    state=STATE_PENDING,
                    attempts=0,
                    next_attempt_at_ms=now,
                    received_at_ms=entry.received_at_ms,
                )
            )
