"""encode(): fixed expectations taken from PHP 8.2's http_build_query (no PHP needed here)."""

from __future__ import annotations

import pytest

from contactsync.wire.phpform import encode, php_float


def test_nested_payload_matches_php() -> None:
    data = {
        "transactionid": "7262734018228486144",
        "contact": {"id": 42, "email": "jane@example.com", "phone": "+15551234567"},
        "fields": [{"id": 3, "name": "First Name", "value": "Jané"}],
        "goals-reached": [],
    }
    assert encode(data) == (
        "transactionid=7262734018228486144&contact%5Bid%5D=42&contact%5Bemail%5D=jane%40example.com"
        "&contact%5Bphone%5D=%2B15551234567&fields%5B0%5D%5Bid%5D=3&fields%5B0%5D%5Bname%5D=First+Name"
        "&fields%5B0%5D%5Bvalue%5D=Jan%C3%A9"
    )


def test_scalars_and_skips() -> None:
    data: dict[str | int, object] = {
        "t": True,
        "f": False,
        "n": None,
        "e": [],
        "q": {"x": []},
        "s": [None],
        "z": "",
        5: {"r": 1},
    }
    assert encode(data) == "t=1&f=0&z=&5%5Br%5D=1"


def test_rfc1738_and_rfc3986_differ_on_tilde_and_space() -> None:
    assert encode({"~ *": "~ *+é"}) == "%7E+%2A=%7E+%2A%2B%C3%A9"
    assert encode({"~ *": "~ *+é"}, rfc3986=True) == "~%20%2A=~%20%2A%2B%C3%A9"


def test_empty_key_still_nests_and_brackets_in_keys_are_encoded() -> None:
    assert encode({"": {"a": [1, {"": "z"}]}}) == "%5Ba%5D%5B0%5D=1&%5Ba%5D%5B1%5D%5B%5D=z"
    assert encode({"a[b]": "1"}) == "a%5Bb%5D=1"


def test_top_level_list_and_surrogateescape_bytes() -> None:
    assert encode(["x", "y"]) == "0=x&1=y"
    assert encode({"k\udcff": "\udcfe"}) == "k%FF=%FE"
    assert encode({"b": b"\x00\xff"}) == "b=%00%FF"


@pytest.mark.parametrize(
    ("value", "php"),
    [
        (0.1, "0.1"),
        (1e20, "1.0E+20"),
        (0.1 + 0.2, "0.3"),
        (1 / 3, "0.33333333333333"),
        (float("inf"), "INF"),
        (float("-inf"), "-INF"),
        (float("nan"), "NAN"),
        (-0.0, "-0"),
        (1e15, "1.0E+15"),
        (1e14, "1.0E+14"),
        (123456789012345678.0, "1.2345678901235E+17"),
        (1.5e-7, "1.5E-7"),
        (100.0, "100"),
        (1e-5, "1.0E-5"),
        (0.0001, "0.0001"),
        (12345678901234.5, "12345678901234"),
        (0.000123456789012345, "0.00012345678901234"),
        (-1234.5e-10, "-1.2345E-7"),
    ],
)
def test_floats_use_precision_14(value: float, php: str) -> None:
    assert php_float(value) == php


def test_unsupported_types_are_refused() -> None:
    with pytest.raises(TypeError):
        encode({"a": object()})
    with pytest.raises(TypeError):
        encode({(1, 2): "x"})


def test_bytes_keys_and_values_are_sent_as_is() -> None:
    assert encode({b"k\xff": b"\xc3\xa9", "b": bytearray(b"+")}) == "k%FF=%C3%A9&b=%2B"
