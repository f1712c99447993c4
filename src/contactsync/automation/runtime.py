"""What the services need from the outside world: the clock, transaction ids, a few settings.

Passed in explicitly (never module state) so tests fix time and ids, and one process keeps one
id generator for all its transactions.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from contactsync import __version__
from contactsync.db.platform import deliveries
from contactsync.db.sealing import Keyring, keyring_from_settings
from contactsync.settings import Settings
from contactsync.wire.transactionid import SEQUENCE_BITS, TransactionIdGenerator, wall_clock_ms


def utc_now() -> datetime:
    """Naive UTC wall-clock time, the convention of every timestamp column."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class IssuedSecret:
    """An action's new signing secret, in clear, for :attr:`Runtime.on_secret` (the demo's pairing)."""

    account_id: int
    automation_id: int
    automation_name: str
    action_id: int
    secret: str
    action_name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Runtime:
    """Clock (naive UTC), transactionid source and the settings the services read."""

    clock: Callable[[], datetime] = utc_now
    ids: TransactionIdGenerator
    public_base_url: str = "http://127.0.0.1:8000"
    default_country_code: str = "1"
    user_agent: str = f"contactsync/{__version__}"
    keyring: Keyring = field(default_factory=Keyring.ephemeral)
    """Seals customers' credentials at rest (db/sealing.py)."""
    on_secret: Callable[[IssuedSecret], None] | None = None
    """Called inside the transaction that gives an action a new secret (create, rotate): the demo
    registers it with its own listener; nothing else sets it."""

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        engine: sa.Engine | None = None,
        clock: Callable[[], datetime] = utc_now,
        clock_ms: Callable[[], int] = wall_clock_ms,
        sequence_offset: int | None = None,
        keyring: Keyring | None = None,
    ) -> Runtime:
        """A runtime for ``settings``; with ``engine``, ids start above the largest one stored.

        Each millisecond's id sequence starts at ``sequence_offset``, random by default, so that two
        processes are unlikely to hand out the same id in the same millisecond (the outbox's unique
        key and one retry with fresh ids handle the rare clash).
        """
        after = 0
        if engine is not None:
            with engine.connect() as conn:
                after = int(conn.execute(sa.select(sa.func.max(deliveries.c.transactionid))).scalar() or 0)
        return cls(
            clock=clock,
            ids=TransactionIdGenerator(
                clock_ms=clock_ms,
                after=after,
                sequence_offset=secrets.randbelow(1 << SEQUENCE_BITS)
                if sequence_offset is None
                else sequence_offset,
            ),
            public_base_url=settings.public_base_url,
            default_country_code=settings.default_country_code,
            keyring=keyring or keyring_from_settings(settings),
        )
