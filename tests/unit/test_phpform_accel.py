"""The C accelerator (``_phpform_c``) against the pure-Python reference it must equal, byte for byte.

The reference is checked against real PHP elsewhere (vectors, integration tests); here generated
hostile bodies and nested data go through both paths, and the C path must give the same dict (keys,
key types, order) or the same error. ``decode`` in C reads untrusted bodies, so the generators lean
on what breaks parsers: brackets, escapes of every byte, NUL, deep and append-heavy names, limits.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.errors import PHPFormLimitError
from contactsync.wire import phpform
from support import examples

try:
    from contactsync.wire import _phpform_c as accel
except ImportError:  # the failing test below says how to build it
    accel = None  # type: ignore[assignment]  # the same optional import as phpform's own
VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "phpform.json").read_text())


def test_the_extension_is_built() -> None:
    assert accel is not None, "contactsync.wire._phpform_c is missing: run `pip install -e .`"
    assert phpform.IMPLEMENTATION == "c"


def ordered(value: Any) -> Any:
    """Dicts as (key, type of key, value) lists: order and int-vs-str keys both count."""
    if isinstance(value, dict):
        return [(key, type(key).__name__, ordered(item)) for key, item in value.items()]
    return value


def outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A call's result in comparable form, or the error it raised (type and limit fields)."""
    try:
        return ("ok", ordered(fn(*args, **kwargs)))
    except PHPFormLimitError as exc:
        return ("limit", exc.limit, exc.value, exc.maximum)
    except (UnicodeEncodeError, RecursionError, TypeError) as exc:
        return ("error", type(exc).__name__)


def c_decode(
    body: str | bytes, source: str = "post", max_input_vars: int = 1000, max_nesting: int = 64
) -> Any:
    assert accel is not None
    decoded = accel.decode(body, source, max_input_vars, max_nesting, "drop")
    assert decoded is not None, "the C path must handle every body in drop mode"
    return decoded


# --- the committed vectors (recorded from PHP) through both paths -------------------------------


def _vector_body(body: str | dict[str, str]) -> bytes:
    return bytes.fromhex(body["hex"]) if isinstance(body, dict) else body.encode()


def test_decode_vectors_agree() -> None:
    for case in VECTORS["decode"]:
        raw = _vector_body(case["body"])
        for body in (raw, raw.decode("utf-8", "surrogateescape")):
            expected = ordered(phpform._decode_py(body, source=case["source"]))
            assert ordered(c_decode(body, case["source"])) == expected, case["comment"]


def test_encode_vectors_agree() -> None:
    assert accel is not None
    for case in VECTORS["encode"]:
        for rfc3986, key in ((False, "rfc1738"), (True, "rfc3986")):
            assert accel.encode(case["data"], rfc3986, phpform.php_float) == case[key], case["comment"]
            assert phpform._encode_py(case["data"], rfc3986=rfc3986) == case[key], case["comment"]


# --- generated hostile bodies -------------------------------------------------------------------

NAME_TOKENS = [
    "a", "b", "0", "5", "-1", "01", "-0", " ", "  ", ".", "[", "]", "[]", "[ ]", "[\t]", "[\r]", "[\v]",
    "[x]", "[0]", "[-5]", "][", "[[", "]]", "%5B", "%5D", "%5b%5d", "%00", "\x00", "+", "_", "__Host-",
    "__Secure-", "__", "%zz", "%", "%4", "%C3%A9", "%FF", "é", "%3D", "%26", "%2B", "%01", "\x01",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
    "[9223372036854775807]", "[9223372036854775806]", "[-9223372036854775808]", "99999999999999999999",
]  # fmt: skip
VALUE_TOKENS = ["", "v", "x y", "+", "%20", "%00", "\x00", "%zz", "%", "%F", "=", "%3D", "%26", "é", "%E2%82"]

any_escape = st.integers(0, 255).map(lambda byte: f"%{byte:02X}")
any_char = st.characters(max_codepoint=0x7F)
name_text = st.lists(
    st.one_of(st.sampled_from(NAME_TOKENS), st.sampled_from(NAME_TOKENS), any_escape, any_char), max_size=8
).map("".join)
deep_name = st.builds(
    lambda base, depth, step, tail: base + step * depth + tail,
    st.sampled_from(["a", "b", "x.y", " __Host-a", "0"]),
    st.integers(0, 70),
    st.sampled_from(["[x]", "[]", "[0]", "[ ]", "[%5D", "[9223372036854775807]"]),
    st.sampled_from(["", "[", "[]", "x", "]", "[z", "[\x00]"]),
)
value_text = st.lists(st.one_of(st.sampled_from(VALUE_TOKENS), any_escape, any_char), max_size=3).map("".join)
piece = st.builds(
    lambda name, eq, value: name + ("=" + value if eq else ""),
    st.one_of(name_text, name_text, deep_name),
    st.booleans(),
    value_text,
)
text_body = st.lists(st.one_of(piece, piece, piece, st.just("")), max_size=12).map("&".join)
raw_body = st.one_of(
    text_body.map(str.encode),
    st.binary(max_size=40),  # arbitrary bytes: invalid UTF-8, NUL, lone '%'
    st.lists(st.one_of(text_body.map(str.encode), st.binary(max_size=6)), max_size=4).map(b"".join),
)
any_body = st.one_of(raw_body, raw_body.map(lambda raw: raw.decode("utf-8", "surrogateescape")))
limits = st.tuples(
    st.sampled_from(["post", "get"]),
    st.one_of(st.just(1000), st.integers(0, 6)),
    st.one_of(st.just(64), st.integers(0, 4)),
)


@settings(max_examples=examples(ci=2000))
@given(any_body, limits)
def test_decode_agrees_on_hostile_bodies(body: str | bytes, limit: tuple[str, int, int]) -> None:
    source, max_input_vars, max_nesting = limit
    kwargs: dict[str, Any] = {"source": source, "max_input_vars": max_input_vars, "max_nesting": max_nesting}
    expected = ordered(phpform._decode_py(body, **kwargs))
    assert ordered(c_decode(body, source, max_input_vars, max_nesting)) == expected
    # on_limit="raise": the C path hands limit cases to Python, which raises
    kwargs["on_limit"] = "raise"
    assert outcome(phpform.decode, body, **kwargs) == outcome(phpform._decode_py, body, **kwargs)


def _many(count: int, template: str) -> str:
    return "&".join(template.format(i=i, j=i % 7) for i in range(count))


@pytest.mark.parametrize(
    "body",
    [
        _many(1005, "v{i}=1"),
        _many(1005, "a[]={i}"),
        _many(1005, "a[{j}][]={i}"),
        _many(1005, "a[][x{j}][]={i}&"),
        _many(300, "a" + "[]" * 70 + "={i}"),
        _many(300, "a" + "[x]" * 63 + "[]={i}"),
        _many(1005, "&"),
        _many(50, "a[9223372036854775806][]={i}&a[]=x"),
        "a[9223372036854775807]=1&a[]=2&a[]=3&b[-9223372036854775808]=1&b[]=2",
        "a[-5]=1&a[]=2&a[-3]=3&a[]=4",
        "a[]=1&a=2&a[]=3&a[x][]=4&a[x]=5&a[x][]=6",
        "%5B%5D=1&%20%20a%2Eb%5B%20%5D=2&a.b[=3&a b[c[d=4",
    ],
)
@pytest.mark.parametrize("source", ["post", "get"])
def test_decode_agrees_on_large_bodies(body: str, source: Any) -> None:
    for max_nesting in (64, 5):
        assert ordered(c_decode(body, source, max_nesting=max_nesting)) == ordered(
            phpform._decode_py(body, source=source, max_nesting=max_nesting)
        )
    assert outcome(phpform.decode, body, source=source, on_limit="raise") == outcome(
        phpform._decode_py, body, source=source, on_limit="raise"
    )


def test_decode_hands_odd_arguments_to_python() -> None:
    assert accel is not None
    odd: Any = bytearray(b"a=1")  # not a type the stub allows: the point of the test
    assert accel.decode(odd, "post", 1000, 64, "drop") is None
    assert accel.decode("a=1", "POST", 1000, 64, "drop") is None
    assert accel.decode("a=1", "post", 2**70, 64, "drop") is None
    assert accel.decode("a=1", "get", -1, 64, "drop") is None
    assert phpform.decode("a=1&b=2&c=3", source="get", max_input_vars=-1) == phpform._decode_py(
        "a=1&b=2&c=3", source="get", max_input_vars=-1
    )
    with pytest.raises(UnicodeEncodeError):
        phpform.decode("a=\ud800")


# --- generated data for encode ------------------------------------------------------------------

surrogate_text = st.binary(max_size=6).map(lambda raw: raw.decode("utf-8", "surrogateescape"))
keys = st.one_of(
    st.text(max_size=6),
    surrogate_text,
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.binary(max_size=4),
    st.sampled_from(["", "a", "0", "x y", "~", "[", "%", "+"]),
)
scalars = st.one_of(
    st.text(max_size=12),
    surrogate_text,
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.booleans(),
    st.none(),
    st.binary(max_size=6),
)
odd = st.one_of(  # what the C path leaves to Python: it must hand back None, never a wrong answer
    st.binary(max_size=3).map(bytearray),
    st.dictionaries(st.text(max_size=2), scalars, max_size=2).map(OrderedDict),
    st.floats(allow_nan=False).map(lambda number: {number: "float key"}),
    st.just({(1, 2): "tuple key"}),
    st.just(object()),
    st.just(range(2)),
)
trees = st.recursive(
    st.one_of(scalars, scalars, scalars, odd),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=16,
)
documents = st.one_of(st.dictionaries(keys, trees, max_size=6), st.lists(trees, max_size=4))


@settings(max_examples=examples(ci=2000))
@given(documents, st.booleans())
def test_encode_agrees_on_nested_data(data: Any, rfc3986: bool) -> None:
    assert accel is not None
    expected = outcome(lambda: phpform._encode_py(data, rfc3986=rfc3986))
    fast = outcome(lambda: accel.encode(data, rfc3986, phpform.php_float))
    if fast != ("ok", None):  # None: handed to Python
        assert fast == (expected if expected[0] == "error" else ("ok", expected[1]))
    assert outcome(lambda: phpform.encode(data, rfc3986=rfc3986)) == expected


def test_encode_errors_match() -> None:
    looped: list[Any] = []
    looped.append(looped)
    for data in ({"a": "\ud800"}, {"\ud800": "a"}, {"a": looped}, {"a": object()}):
        assert outcome(phpform.encode, data) == outcome(phpform._encode_py, data)


def test_very_deep_data_is_left_to_python() -> None:
    assert accel is not None
    deep: list[Any] = ["v"]
    for _ in range(2500):
        deep = [deep]
    with pytest.raises(RecursionError):  # as the Python path does under the default limit
        accel.encode(deep, False, phpform.php_float)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:  # a raised limit does not let the C code recurse without bound
        assert accel.encode(deep, False, phpform.php_float) is None
    finally:
        sys.setrecursionlimit(limit)
    assert accel.encode([[["v"]]], False, phpform.php_float) == "0%5B0%5D%5B0%5D=v"


def test_python_path_serves_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    body = "a[]=1&b[c]=2"
    fast = (phpform.decode(body), phpform.encode({"a": [1, {"b": "x y"}]}))
    monkeypatch.setattr(phpform, "_accel", None)
    assert (phpform.decode(body), phpform.encode({"a": [1, {"b": "x y"}]})) == fast
