"""Transaction ids: layout, monotonicity under a misbehaving clock, threads, strict parsing."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.errors import PayloadError
from contactsync.wire import transactionid as tx
from support import examples

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def scripted(times: list[int]) -> Callable[[], int]:
    """A clock that returns ``times`` one after the other, then keeps returning the last one."""
    it = iter(times)
    last = [times[0]]

    def clock() -> int:
        last[0] = next(it, last[0])
        return last[0]

    return clock


def test_epoch_is_2020() -> None:
    assert tx.EPOCH_MS == 1_577_836_800_000
    assert tx.make(tx.EPOCH_MS) == 0


def test_wire_example_parses() -> None:
    # wire.md's print_r example: a valid 63-bit id (its time part is illustrative, far in the future)
    assert tx.parse("7262734018228486144") == 7262734018228486144


def test_layout() -> None:
    gen = tx.TransactionIdGenerator(clock_ms=lambda: T0 + 5)
    tid = gen.next()
    assert tid == (T0 + 5 - tx.EPOCH_MS) * 65536
    assert tx.timestamp_ms(tid) == T0 + 5
    assert tx.sequence(tid) == 0
    assert tid <= tx.MAX_ID


def test_same_millisecond_uses_the_sequence() -> None:
    gen = tx.TransactionIdGenerator(clock_ms=lambda: T0)
    ids = [gen.next() for _ in range(3)]
    assert [tx.sequence(i) for i in ids] == [0, 1, 2]
    assert {tx.timestamp_ms(i) for i in ids} == {T0}


def test_clock_going_backwards_stays_monotonic() -> None:
    gen = tx.TransactionIdGenerator(clock_ms=scripted([T0 + 100, T0, T0 - 50_000, T0 + 101]))
    ids = [gen.next() for _ in range(4)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    assert tx.timestamp_ms(ids[1]) == T0 + 100  # borrowed the last millisecond, not the earlier clock
    assert tx.timestamp_ms(ids[3]) == T0 + 101  # the clock caught up again


def test_more_than_65536_in_one_millisecond_borrows_the_next() -> None:
    gen = tx.TransactionIdGenerator(clock_ms=lambda: T0)
    ids = [gen.next() for _ in range(65536 + 3)]
    assert ids == sorted(set(ids))
    assert tx.timestamp_ms(ids[65535]) == T0
    assert tx.timestamp_ms(ids[65536]) == T0 + 1
    assert tx.sequence(ids[65536]) == 0


def test_after_keeps_a_restarted_process_ahead() -> None:
    previous = tx.make(T0 + 1000, 7)
    gen = tx.TransactionIdGenerator(clock_ms=lambda: T0, after=previous)
    assert gen.next() == previous + 1
    assert gen.last == previous + 1


def test_thread_safe() -> None:
    gen = tx.TransactionIdGenerator(clock_ms=lambda: T0)
    results: list[list[int]] = [[] for _ in range(8)]

    def work(out: list[int]) -> None:
        out.extend(gen.next() for _ in range(5000))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in results for i in out]
    assert len(set(every)) == len(every) == 40_000
    assert all(out == sorted(out) for out in results)


def test_clock_before_epoch_is_refused() -> None:
    gen = tx.TransactionIdGenerator(clock_ms=lambda: tx.EPOCH_MS - 1)
    with pytest.raises(ValueError, match="before the transactionid epoch"):
        gen.next()


def test_make_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="sequence"):
        tx.make(T0, 65536)
    with pytest.raises(ValueError, match="past the last"):
        tx.make(tx.EPOCH_MS + (1 << 47))
    assert tx.make(tx.EPOCH_MS + (1 << 47) - 1, 65535) == tx.MAX_ID


@given(st.integers(min_value=0, max_value=tx.MAX_ID))
@settings(max_examples=examples(ci=500))
def test_parse_round_trip(tid: int) -> None:
    assert tx.parse(str(tid)) == tid
    assert tx.make(tx.timestamp_ms(tid), tx.sequence(tid)) == tid


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("-1", "only the digits"),
        ("+1", "only the digits"),
        (" 12", "only the digits"),
        ("12 ", "only the digits"),
        ("1.0", "only the digits"),
        ("1e5", "only the digits"),
        ("١٢٣", "only the digits"),  # Arabic-Indic digits are digits to str.isdigit, not to us
        ("0012", "leading zeros"),
        (str(tx.MAX_ID + 1), "63 bits"),
        ("9" * 5000, "63 bits"),
    ],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        tx.parse(text)
    assert info.value.path == "transactionid"


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(PayloadError, match="decimal string"):
        tx.parse(123)  # type: ignore[arg-type]
