"""Prometheus metrics of one listener app: what arrived, what was refused and why, how far handlers lag.

Each app gets its own registry (no process-global state), so tests can run several apps side by
side. Handler lag and backlog are read from the database at scrape time: they must be right after
a restart, and several listener processes sharing one database report the same figures. The
request path only adds to plain integers (a Prometheus child counter takes a lock per increment);
they become counters when scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from contactsync.db.counting import capped, matching
from contactsync.db.listener import UNFINISHED, handler_runs, in_state

REJECT_REASONS = (
    "not_found",
    "ip",
    "method",
    "too_large",
    "limit",
    "signature",
    "content_type",
    "encoding",
    "payload",
    "storage",
)


MAX_HANDLERS = 100
"""Handlers reported at most (a listener runs a handful)."""


def _backlog(conn: sa.Connection) -> Iterator[tuple[str, int, int, int | None]]:
    """Per handler with unfinished runs: pending and failed runs counted up to a cap (10001: more)
    and the oldest pending run's arrival, each a seek or a capped range of the partial indexes of
    unfinished runs: a failing handler's backlog is never read whole at each scrape."""
    h = handler_runs.c
    unfinished = UNFINISHED
    handler = ""
    for _ in range(MAX_HANDLERS):
        found = conn.execute(
            sa.select(sa.func.min(h.handler)).where(h.handler > handler, unfinished)
        ).scalar()
        if found is None:
            return
        handler = found
        pending, failed = (
            capped(conn, matching(handler_runs, h.handler == handler, in_state(state), by=h.id)).n
            for state in ("pending", "failed")
        )
        oldest = conn.execute(
            sa.select(sa.func.min(h.received_at_ms)).where(
                h.handler == handler, h.state == "pending", unfinished
            )
        ).scalar()
        yield handler, pending, failed, oldest


class _BacklogCollector(Collector):
    """Per handler: pending runs, failed runs (each counted up to 10,000: 10001 means more), and the
    age of the oldest pending one (the lag)."""

    def __init__(self, engine: sa.Engine, clock_s: Callable[[], float]) -> None:
        self._engine = engine
        self._clock_s = clock_s

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "contactsync_listener_handler_pending", "Handler runs not yet done", labels=["handler"]
        )
        failed = GaugeMetricFamily(
            "contactsync_listener_handler_failed",
            "Handler runs that exhausted their retries (replay them)",
            labels=["handler"],
        )
        lag = GaugeMetricFamily(
            "contactsync_listener_handler_lag_seconds",
            "Age of the oldest request a handler has not processed yet",
            labels=["handler"],
        )
        now_ms = self._clock_s() * 1000
        try:
            with self._engine.connect() as conn:
                rows = list(_backlog(conn))
        except sa.exc.SQLAlchemyError:
            return
        for handler, n_pending, n_failed, oldest_ms in rows:
            if n_pending:
                pending.add_metric([handler], n_pending)
                if oldest_ms is not None:
                    lag.add_metric([handler], max(now_ms - oldest_ms, 0) / 1000)
            if n_failed:
                failed.add_metric([handler], n_failed)
        yield pending
        yield failed
        yield lag


class _Tally(Collector):
    """Request-path counts: received, duplicates, rejected by reason (event loop thread only)."""

    def __init__(self) -> None:
        self.received = 0
        self.duplicates = 0
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "contactsync_listener_received", "Requests accepted and stored", value=self.received
        )
        yield CounterMetricFamily(
            "contactsync_listener_duplicates",
            "Requests whose transactionid was already stored",
            value=self.duplicates,
        )
        rejected = CounterMetricFamily("contactsync_listener_rejected", "Requests refused", labels=["reason"])
        for reason, count in self.rejected.items():
            rejected.add_metric([reason], count)
        yield rejected


class ListenerMetrics:
    """Counts from the request path (aggregated), handler workers and the inbox writer."""

    def __init__(self, engine: sa.Engine | None = None, *, clock_s: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self.tally = _Tally()
        self.registry.register(self.tally)
        self.handler_results = Counter(
            "contactsync_listener_handler_results",
            "Handler attempts by outcome",
            ["handler", "outcome"],
            registry=self.registry,
        )
        self.handler_delay = Histogram(
            "contactsync_listener_handler_delay_seconds",
            "Time from receipt to the end of a handler attempt",
            ["handler"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300, 3600, 36000),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "contactsync_listener_inbox_batch_size",
            "Requests stored per inbox commit (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        if engine is not None:
            self.registry.register(_BacklogCollector(engine, clock_s))

    def accepted(self) -> None:
        self.tally.received += 1

    def duplicate(self) -> None:
        self.tally.duplicates += 1

    def reject(self, reason: str) -> None:
        rejected = self.tally.rejected
        rejected[reason] = rejected.get(reason, 0) + 1

    def handler_result(self, handler: str, ok: bool, delay_ms: int) -> None:
        self.handler_results.labels(handler, "success" if ok else "failure").inc()
        self.handler_delay.labels(handler).observe(max(delay_ms, 0) / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
