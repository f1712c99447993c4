"""Capped counts say how many rows matched up to their cap, and "N+" past it."""

from __future__ import annotations

from contactsync.db.counting import CAP, Count, total


def test_a_count_is_exact_up_to_the_cap_and_says_more_past_it() -> None:
    assert str(Count(0)) == "0"
    assert str(Count(1234)) == "1,234"
    assert str(Count(CAP)) == "10,000"
    assert str(Count(CAP + 1)) == "10,000+"
    assert str(Count(6, cap=5)) == "5+"
    assert Count(3) == 3
    assert Count(3) != 4
    assert Count(CAP + 1) != CAP + 1  # past the cap it is no exact number
    assert not Count(0)
    assert Count(1)


def test_a_sum_of_counts_stays_capped() -> None:
    assert total([Count(3), Count(4)]) == 7
    assert total([Count(CAP), Count(CAP)]).more
    assert str(total([])) == "0"
