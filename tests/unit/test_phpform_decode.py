"""decode(), measure() and the limits, without PHP (the PHP-checked rules live in the vectors)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.errors import PHPFormLimitError
from contactsync.wire.phpform import FormStats, decode, encode, measure
from support import examples


def _vars(count: int) -> str:
    return "&".join(f"v{i}=1" for i in range(count))


@pytest.mark.parametrize(("source", "kept"), [("get", 1000), ("post", 1001)])
def test_max_input_vars_truncates_or_raises(source: Any, kept: int) -> None:
    assert len(decode(_vars(kept), source=source, on_limit="raise")) == kept
    assert len(decode(_vars(kept + 5), source=source)) == kept
    with pytest.raises(PHPFormLimitError) as caught:
        decode(_vars(kept + 1), source=source, on_limit="raise")
    assert (caught.value.limit, caught.value.value, caught.value.maximum) == (
        "max_input_vars",
        kept + 1,
        1000,
    )


def test_configured_limits_are_honoured() -> None:
    assert list(decode("a=1&b=2&c=3&d=4", source="get", max_input_vars=2)) == ["a", "b"]
    assert list(decode("a=1&b=2&c=3&d=4", source="post", max_input_vars=2)) == ["a", "b", "c"]
    assert decode("a[b][c]=1&d[e]=2", max_nesting=1) == {"d": {"e": "2"}}


def test_nesting_deletes_the_variable_or_raises() -> None:
    deep = "a" + "[x]" * 65 + "=1"
    assert decode("a=0&b=1&" + deep) == {"b": "1"}
    with pytest.raises(PHPFormLimitError) as caught:
        decode("b=1&" + deep, on_limit="raise")
    assert (caught.value.limit, caught.value.value, caught.value.maximum) == (
        "max_input_nesting_level",
        65,
        64,
    )
    assert decode("a" + "[x]" * 64 + "=1", on_limit="raise") != {}


def test_measure_counts_like_php() -> None:
    assert measure("") == FormStats(variables=0, max_nesting=0)
    assert measure("&&a=1&", source="post") == FormStats(variables=3, max_nesting=0)
    assert measure("&&a=1&", source="get") == FormStats(variables=1, max_nesting=0)
    assert measure("a[b][]=1&c%5Bd%5D=2").max_nesting == 2
    assert measure("a[b][c=1").max_nesting == 2  # the unclosed group is still a level PHP enters
    assert measure("[a][b]=1").max_nesting == 0  # an empty name is dropped before any nesting
    stats = measure(_vars(1001) + "&x" + "[y]" * 65 + "=1")
    assert stats.exceeded(source="post") == ["max_input_vars", "max_input_nesting_level"]
    assert stats.exceeded(source="post", max_input_vars=2000, max_nesting=100) == []
    assert measure(_vars(1001), source="post").exceeded(source="post") == []
    assert measure(_vars(1001), source="get").exceeded(source="get") == ["max_input_vars"]


def test_str_and_bytes_bodies_agree_and_keep_raw_bytes() -> None:
    raw = b"k%FF[\xfe]=v%C3%28&x=%E2%82"
    decoded = decode(raw)
    assert decoded == decode(raw.decode("utf-8", "surrogateescape"))
    ((key, inner), (_, tail)) = decoded.items()
    assert isinstance(key, str)
    assert key.encode("utf-8", "surrogateescape") == b"k\xff"
    ((inner_key, value),) = inner.items()
    assert inner_key.encode("utf-8", "surrogateescape") == b"\xfe"
    assert value.encode("utf-8", "surrogateescape") == b"v\xc3("
    assert tail.encode("utf-8", "surrogateescape") == b"\xe2\x82"


def test_escaped_separators_markers_and_malformed_escapes() -> None:
    # %26 / %3D force the marker path; a real \x01 must survive it
    assert decode("a%26b=c%3Dd&e=\x01a%01b%26") == {"a&b": "c=d", "e": "\x01a\x01b&"}
    # a malformed escape forces the piece-by-piece path
    assert decode("a%3D=%zz%26%&b=%4") == {"a=": "%zz&%", "b": "%4"}
    for odd in ("%\n41", "%\r\n41", "%\rx\n41", "%%41", "%4=", "%=41", "x%", "%3%41"):
        assert decode(f"a={odd}") == {"a": odd.replace("%41", "A")}, odd


def test_encode_falls_back_for_nul_and_control_bytes() -> None:
    assert encode({"a\x00": "x\x01y", "b": "\x00"}) == "a%00=x%01y&b=%00"
    assert encode({"a": "\x01"}, rfc3986=True) == "a=%01"


def test_plus_and_space_order_in_encode() -> None:
    assert encode({"a": "+ +%", "b": "% +"}) == "a=%2B+%2B%25&b=%25+%2B"


names = st.text(alphabet="abcdefghij_-", min_size=1, max_size=5).filter(lambda s: not s.startswith("__"))
values = st.one_of(
    st.text(max_size=10), st.binary(max_size=5).map(lambda b: b.decode("utf-8", "surrogateescape"))
)
trees = st.recursive(
    values, lambda inner: st.dictionaries(names, inner, min_size=1, max_size=4), max_leaves=20
)


@settings(max_examples=examples(ci=500))
@given(st.dictionaries(names, trees, max_size=6))
def test_decode_inverts_encode_for_plain_names(data: dict[str, Any]) -> None:
    for source in ("post", "get"):
        assert decode(encode(data), source=source) == data
        assert decode(encode(data, rfc3986=True), source=source) == data


bracket_names = st.lists(
    st.sampled_from(["a", "[x]", "[]", "[ ]", "[", "]", " ", ".", "%5B", "%00"]), max_size=8
)


@settings(max_examples=examples(ci=500))
@given(bracket_names.map("".join), st.integers(0, 3))
def test_measure_agrees_with_the_nesting_limit(name: str, limit: int) -> None:
    body = f"{name}=1"
    depth = measure(body).max_nesting
    if depth > limit:
        with pytest.raises(PHPFormLimitError):
            decode(body, max_nesting=limit, on_limit="raise")
    else:
        decode(body, max_nesting=limit, on_limit="raise")
