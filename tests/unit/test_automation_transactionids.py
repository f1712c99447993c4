"""Transaction id generators seeded with a sequence offset: distinct, time-ordered, monotonic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.wire import transactionid as tx
from support import examples

T0 = 1_780_000_000_000


def test_same_clock_same_offset_collides_and_different_offsets_do_not() -> None:
    a = tx.TransactionIdGenerator(clock_ms=lambda: T0)
    b = tx.TransactionIdGenerator(clock_ms=lambda: T0)
    assert a.next() == b.next()  # what the outbox's unique key and the retry are for
    c = tx.TransactionIdGenerator(clock_ms=lambda: T0, sequence_offset=30_000)
    first = c.next()
    assert first == tx.make(T0, 30_000)
    assert tx.timestamp_ms(first) == T0


def test_offset_near_the_top_carries_into_the_next_millisecond() -> None:
    gen = tx.TransactionIdGenerator(clock_ms=lambda: T0, sequence_offset=65_535)
    ids = [gen.next() for _ in range(3)]
    assert ids == [tx.make(T0, 65_535), tx.make(T0 + 1, 0), tx.make(T0 + 1, 1)]


@pytest.mark.parametrize("offset", [-1, 65_536])
def test_offset_out_of_range_is_refused(offset: int) -> None:
    with pytest.raises(ValueError, match="sequence_offset"):
        tx.TransactionIdGenerator(clock_ms=lambda: T0, sequence_offset=offset)


@settings(max_examples=examples(ci=200))
@given(
    offset=st.integers(0, 65_535),
    steps=st.lists(st.integers(-5, 5), min_size=1, max_size=50),
)
def test_ids_stay_monotonic_and_near_the_clock(offset: int, steps: list[int]) -> None:
    clock = [T0]

    def now() -> int:
        return clock[0]

    gen = tx.TransactionIdGenerator(clock_ms=now, sequence_offset=offset)
    last, latest = 0, T0
    for step in steps:
        clock[0] += step
        latest = max(latest, clock[0])
        tid = gen.next()
        assert tid > last
        last = tid
        # never behind the latest clock reading; ahead of it by at most one carry per id
        assert tx.timestamp_ms(tid) >= clock[0]
        assert tx.timestamp_ms(tid) <= latest + len(steps)
