"""Prometheus metrics of the delivery engine (delivery.md "Observability"), on a registry passed in.

No module-level collectors: each dispatcher (and each test) gets its own :class:`DeliveryMetrics`
on the registry its app serves at ``/metrics``, so two instances never collide.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from contactsync.db.counting import CAP, capped, matching
from contactsync.db.platform import DELIVERY_STATES, deliveries
from contactsync.delivery import backlog, outbox
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery.attempt import outcome_label

ATTEMPT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)


class DeliveryMetrics:
    """Queue depth by state, outcomes, attempt latency, oldest pending age, disabled endpoints."""

    def __init__(self, registry: CollectorRegistry, *, namespace: str = "contactsync") -> None:
        self.registry = registry
        self.queue_depth = Gauge(
            "deliveries_queue_depth",
            f"Deliveries by state, counted up to {CAP} ({CAP + 1}: more).",
            ["state"],
            namespace=namespace,
            registry=registry,
        )
        self.deliveries = Counter(
            "deliveries",
            "Attempts judged, by resulting delivery state (delivered, pending = retry, failed).",
            ["outcome"],
            namespace=namespace,
            registry=registry,
        )
        self.attempts = Counter(
            "delivery_attempts",
            "Attempts made, by outcome (success, http_4xx, http_5xx, gone, timeout, connect, reset, …).",
            ["outcome"],
            namespace=namespace,
            registry=registry,
        )
        self.attempt_seconds = Histogram(
            "delivery_attempt_duration_seconds",
            "Duration of one attempt, connect to last byte read.",
            buckets=ATTEMPT_BUCKETS_S,
            namespace=namespace,
            registry=registry,
        )
        self.oldest_pending_age = Gauge(
            "deliveries_oldest_pending_age_seconds",
            "How long the longest-waiting pending or in-flight delivery has been due (0: none overdue).",
            namespace=namespace,
            registry=registry,
        )
        self.disabled_endpoints = Gauge(
            "endpoints_disabled", "Endpoints currently disabled.", namespace=namespace, registry=registry
        )
        self.endpoint_disables = Counter(
            "endpoint_disables",
            "Endpoints disabled, by reason (gone = 410, auto_disabled = 5 days failing, disabled = owner).",
            ["reason"],
            namespace=namespace,
            registry=registry,
        )

    def observe(self, finished: outbox.Finished) -> None:
        """Count one recorded attempt."""
        self.attempts.labels(outcome_label(finished.result)).inc()
        self.deliveries.labels(finished.decision.verdict.value).inc()
        self.attempt_seconds.observe(finished.result.duration_s)

    def observe_many(self, finished: Iterable[outbox.Finished]) -> None:
        """Count a flush of recorded attempts: one increment per label, not per attempt."""
        outcomes: collections.Counter[str] = collections.Counter()
        verdicts: collections.Counter[str] = collections.Counter()
        for f in finished:
            outcomes[outcome_label(f.result)] += 1
            verdicts[f.decision.verdict.value] += 1
            self.attempt_seconds.observe(f.result.duration_s)
        for label, n in outcomes.items():
            self.attempts.labels(label).inc(n)
        for label, n in verdicts.items():
            self.deliveries.labels(label).inc(n)

    def refresh(self, conn: sa.Connection, *, now: datetime) -> None:
        """Update the gauges that come from the database (queue depth, oldest pending, disabled), each
        through an index and a bounded read: a scrape costs the same at any outbox size."""
        d = deliveries.c
        for state in DELIVERY_STATES:
            self.queue_depth.labels(state).set(
                capped(conn, matching(deliveries, d.state == state, by=d.id)).n
            )
        oldest = backlog.oldest_due(conn)
        self.oldest_pending_age.set(max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
        self.disabled_endpoints.set(len(endpoint_rows.disabled(conn)))
