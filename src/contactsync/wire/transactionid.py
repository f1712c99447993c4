"""Time-ordered 63-bit transaction ids: ``(ms since 2020-01-01T00:00:00Z) × 65536 + 16-bit sequence``.

A transactionid names one delivery and is identical on every retry, so receivers deduplicate on it;
because it is time-ordered, a receiver can also drop a contact update older than the one it already
applied (wire.md). On the wire it is a decimal string.

Uniqueness: :class:`TransactionIdGenerator` is monotonic within one process (even when the clock goes
backwards or more than 65536 ids are asked for in one millisecond — it borrows from the next
millisecond). Across processes and machines two generators can produce the same value, so the platform
database enforces uniqueness with a unique key on the outbox's transactionid; a writer that hits it
draws a new id and retries. Seeding a generator with ``after=`` (the largest id already stored) keeps a
restarted process ahead of its previous ids even if the clock was set back in between.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from contactsync.errors import PayloadError

__all__ = [
    "EPOCH_MS",
    "MAX_ID",
    "SEQUENCE_BITS",
    "TransactionIdGenerator",
    "make",
    "parse",
    "sequence",
    "timestamp_ms",
    "wall_clock_ms",
]

EPOCH_MS = 1_577_836_800_000
"""2020-01-01T00:00:00Z in Unix milliseconds: the zero of the id's time part."""

SEQUENCE_BITS = 16
_SEQUENCE_MASK = (1 << SEQUENCE_BITS) - 1
MAX_ID = (1 << 63) - 1
"""Largest id (fits a signed 64-bit database column); its millisecond part lasts until the year 6479."""
_MAX_DIGITS = len(str(MAX_ID))


def wall_clock_ms() -> int:
    """Unix time in milliseconds: the clock to pass as ``clock_ms`` outside tests."""
    return time.time_ns() // 1_000_000


def make(unix_ms: int, seq: int = 0) -> int:
    """The id for ``unix_ms`` with sequence ``seq``; ``make(t)`` is the smallest id of that millisecond."""
    if not 0 <= seq <= _SEQUENCE_MASK:
        raise ValueError(f"sequence must be in 0..{_SEQUENCE_MASK}, got {seq}")
    since_epoch = unix_ms - EPOCH_MS
    if since_epoch < 0:
        raise ValueError(f"time {unix_ms} ms is before the transactionid epoch (2020-01-01T00:00:00Z)")
    tid = (since_epoch << SEQUENCE_BITS) | seq
    if tid > MAX_ID:
        raise ValueError(f"time {unix_ms} ms is past the last representable transactionid")
    return tid


def timestamp_ms(tid: int) -> int:
    """Unix milliseconds encoded in ``tid`` (when it was generated, give or take borrowed milliseconds)."""
    return (tid >> SEQUENCE_BITS) + EPOCH_MS


def sequence(tid: int) -> int:
    """The 16-bit sequence part of ``tid``."""
    return tid & _SEQUENCE_MASK


def parse(text: str) -> int:
    """The id written as ``text``: a canonical decimal string (ASCII digits, no sign or leading zero).

    Raises :class:`~contactsync.errors.PayloadError` (path ``transactionid``) for anything else, so a
    listener can answer with the offending key.
    """
    if not isinstance(text, str):
        raise PayloadError(
            f"transactionid must be a decimal string, got {type(text).__name__}", path="transactionid"
        )
    if not text:
        raise PayloadError("transactionid is empty", path="transactionid")
    if not (text.isascii() and text.isdigit()):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise PayloadError(
            f"transactionid must contain only the digits 0-9, got {shown!r}", path="transactionid"
        )
    if len(text) > 1 and text[0] == "0":
        raise PayloadError(f"transactionid must not have leading zeros, got {text!r}", path="transactionid")
    if len(text) > _MAX_DIGITS or int(text) > MAX_ID:
        raise PayloadError(
            f"transactionid must be at most {MAX_ID} (63 bits), got {len(text)} digits", path="transactionid"
        )
    return int(text)


class TransactionIdGenerator:
    """Hands out strictly increasing ids; thread-safe; one instance per process is enough.

    ``clock_ms`` returns Unix milliseconds (``wall_clock_ms`` in production, a fake in tests).
    ``after`` is a lower bound: every id handed out is greater than it. ``sequence_offset`` is where
    each new millisecond's sequence starts (0..65535): processes given different (random) offsets
    rarely hand out the same id in the same millisecond, while ids stay time-ordered.
    """

    def __init__(self, *, clock_ms: Callable[[], int], after: int = 0, sequence_offset: int = 0) -> None:
        if not 0 <= after < MAX_ID:
            raise ValueError(f"after must be in 0..{MAX_ID - 1}, got {after}")
        if not 0 <= sequence_offset <= _SEQUENCE_MASK:
            raise ValueError(f"sequence_offset must be in 0..{_SEQUENCE_MASK}, got {sequence_offset}")
        self._clock_ms = clock_ms
        self._last = after
        self._offset = sequence_offset
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        """The most recent id handed out (or the ``after`` bound before the first one)."""
        return self._last

    def next(self) -> int:
        """A new id, greater than every id this generator handed out before.

        When the clock has not advanced past the last id (same millisecond, clock set back, or the
        16-bit sequence exhausted), the id is last + 1: the sequence carries into the millisecond part,
        so ids run slightly ahead of the clock until it catches up.
        """
        with self._lock:
            candidate = make(self._clock_ms(), self._offset)
            if candidate <= self._last:
                candidate = self._last + 1
                if candidate > MAX_ID:
                    raise OverflowError("transactionid space exhausted")
            self._last = candidate
            return candidate
