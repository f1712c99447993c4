"""Configuration of one dispatcher process: throttles, timings, and the network policy."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from contactsync.db.retention import Retention
from contactsync.db.sealing import Keyring, keyring_from_settings
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery.attempt import DEFAULT_USER_AGENT
from contactsync.delivery.netguard import NetPolicy
from contactsync.delivery.notify import Mailer
from contactsync.settings import Settings

_EPOCH = datetime(1970, 1, 1)


def utcnow() -> datetime:
    """Naive UTC, the database's time format (read twice per attempt: ``datetime.now(UTC)
    .replace(tzinfo=None)`` costs twice as much, most of it in ``replace``)."""
    return _EPOCH + timedelta(seconds=time.time())


def default_owner() -> str:
    """``host:pid``: who holds a lease, for operators reading the outbox."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatcherConfig:
    """Throttles and timings of one dispatcher process."""

    owner: str = field(default_factory=default_owner)
    concurrency: int = 200
    retry_concurrency: int | None = None
    """Share of ``concurrency`` retries may use (default half); the rest is kept for first attempts."""
    endpoint_concurrency: int = endpoint_rows.DEFAULT_MAX_IN_FLIGHT
    prefetch: float = 2.0
    """Claimed work held per lane, as a multiple of what may be in flight: keeps the pipe full while
    the next claim runs (leases of waiting work are extended, and released on shutdown)."""
    batch_size: int = 200
    lease_s: float = 60.0
    poll_interval_s: float = 1.0
    flush_interval_s: float = 0.05
    """How long finished attempts wait to be recorded together: one transaction per flush, whatever
    its size, so larger flushes cost less per attempt (nothing is marked delivered before its 2xx)."""
    shutdown_grace_s: float = 10.0
    health_interval_s: float = 300.0
    metrics_interval_s: float = 15.0
    limits_ttl_s: float = 30.0
    slot_lease_s: float = 30.0
    """PostgreSQL: how long an endpoint's in-flight slot stays leased to this process unless renewed
    (every third of it): what a process that dies holds its endpoints' slots for (delivery/slots.py)."""
    slot_turn_s: float = 2.0
    """PostgreSQL: how long a slot passes from one attempt to the next of this process before it goes
    back to the database, where other processes sending to the same endpoint can take it."""
    user_agent: str = DEFAULT_USER_AGENT
    policy: NetPolicy = field(default_factory=NetPolicy)
    keyring: Keyring | None = None
    """Opens the sealed secrets and header values; without it only values never sealed can be sent."""
    listen: bool = True
    """Wake on PostgreSQL ``NOTIFY`` (ignored on SQLite, where :meth:`Dispatcher.wake` is the signal)."""
    retention: Retention | None = None
    """Prune the platform's history (db/retention.py) every ``retention_interval_s``; None: never."""
    retention_interval_s: float = 3600.0
    mailer: Mailer | None = None
    """Tells account owners by e-mail when an endpoint stops receiving (every health interval)."""

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DispatcherConfig:
        base = cls(
            concurrency=settings.dispatcher_concurrency,
            endpoint_concurrency=settings.endpoint_concurrency,
            batch_size=settings.claim_batch_size,
            keyring=keyring_from_settings(settings),
            lease_s=settings.lease_s,
            slot_lease_s=settings.endpoint_slot_lease_s,
            poll_interval_s=settings.poll_interval_s,
            retention=Retention.from_settings(settings),
            retention_interval_s=settings.retention_interval_s,
            mailer=Mailer.from_settings(settings),
            policy=NetPolicy(
                allow_private_networks=settings.allow_private_networks,
                allowed_cidrs=tuple(settings.allowed_cidrs),
            ),
        )
        return replace(base, **overrides)
