"""phpform against a real PHP 8: ``parse_str``, ``$_POST`` from ``php -S`` and ``http_build_query``.

PHP runs as long-lived processes (one line in, one line out) so thousands of generated bodies reach
it in seconds. PHP's answer is dumped with typed keys and hex bytes, because ``json_encode`` of the
raw arrays would lose int-vs-string keys and fail on invalid UTF-8.
"""

from __future__ import annotations

import http.client
import json
import math
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.wire import phpform
from support import examples
from support.php import php_server as serve_php

pytestmark = pytest.mark.php

PHP_INI = {
    "display_errors": "0",
    "log_errors": "0",
    "max_input_vars": "1000",
    "max_input_nesting_level": "64",
    "arg_separator.input": "&",
    "arg_separator.output": "&",
    "precision": "14",
    "filter.default": "unsafe_raw",
    "enable_post_data_reading": "1",
    "post_max_size": "8M",
}

DUMPER = r"""
function cs_dump($v) {
    if (!is_array($v)) { return bin2hex((string) $v); }
    $out = [];
    foreach ($v as $k => $x) { $out[] = [is_int($k) ? $k : bin2hex($k), cs_dump($x)]; }
    return $out;
}
"""

PARSE_STR_LOOP = (
    DUMPER
    + r"""
while (($line = fgets(STDIN)) !== false) {
    $result = [];
    parse_str(hex2bin(trim($line)), $result);
    echo json_encode(cs_dump($result)), "\n";
    fflush(STDOUT);
}
"""
)

PRINT_R_LOOP = r"""
while (($line = fgets(STDIN)) !== false) {
    $result = [];
    parse_str(hex2bin(trim($line)), $result);
    echo bin2hex(print_r($result, true)), "\n";
    fflush(STDOUT);
}
"""

ENCODE_LOOP = r"""
while (($line = fgets(STDIN)) !== false) {
    $data = unserialize(hex2bin(trim($line)));
    $rfc3986 = http_build_query($data, '', '&', PHP_QUERY_RFC3986);
    echo bin2hex(http_build_query($data)), " ", bin2hex($rfc3986), "\n";
    fflush(STDOUT);
}
"""

ROUTER = "<?php\n" + DUMPER + "echo json_encode(['post' => cs_dump($_POST), 'get' => cs_dump($_GET)]);\n"


def _ini_args() -> list[str]:
    return [arg for key, value in PHP_INI.items() for arg in ("-d", f"{key}={value}")]


def _text(hexed: str) -> str:
    return bytes.fromhex(hexed).decode("utf-8", "surrogateescape")


def from_dump(dumped: Any) -> Any:
    """PHP's dump → nested lists of (key, value) pairs, the order-sensitive form we compare."""
    if isinstance(dumped, str):
        return _text(dumped)
    return [(key if isinstance(key, int) else _text(key), from_dump(value)) for key, value in dumped]


def ordered(value: Any) -> Any:
    """decode()'s dicts in the same order-sensitive form as :func:`from_dump`."""
    if isinstance(value, dict):
        return [(key, ordered(item)) for key, item in value.items()]
    return value


class LineWorker:
    """A PHP process answering one stdin line with one stdout line."""

    def __init__(self, php: str, code: str) -> None:
        self.proc = subprocess.Popen(
            [php, *_ini_args(), "-r", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def ask(self, line: bytes) -> str:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, "PHP worker died"
        return answer.decode().rstrip("\n")

    def close(self) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def parse_str_php(php: str) -> Iterator[LineWorker]:
    worker = LineWorker(php, PARSE_STR_LOOP)
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def print_r_php(php: str) -> Iterator[LineWorker]:
    worker = LineWorker(php, PRINT_R_LOOP)
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def encode_php(php: str) -> Iterator[LineWorker]:
    worker = LineWorker(php, ENCODE_LOOP)
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def php_server(php: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``php -S`` on a free 127.0.0.1 port, serving a router that dumps ``$_POST``/``$_GET``."""
    root = tmp_path_factory.mktemp("phpserver")
    (root / "router.php").write_text(ROUTER)
    with serve_php(php, root, str(root / "router.php"), ini=_ini_args()) as port:
        yield port


def php_request(port: int, *, body: bytes | None = None, query: str = "") -> dict[str, Any]:
    """A POST of ``body`` (urlencoded), or a GET when ``body`` is None; PHP's $_POST and $_GET."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        method = "GET" if body is None else "POST"
        conn.request(method, "/" + (f"?{query}" if query else ""), body=body, headers=headers)
        answer = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return {"post": from_dump(answer["post"]), "get": from_dump(answer["get"])}


def parse_str(worker: LineWorker, body: bytes) -> Any:
    return from_dump(json.loads(worker.ask(body.hex().encode())))


# --- generated hostile bodies ------------------------------------------------------------------

NAME_TOKENS = [
    "a", "b", "x", "0", "1", "5", "-1", "01", "-0", " 2", "9223372036854775807", "9223372036854775808",
    "-9223372036854775808", "-9223372036854775809", "[", "]", "[]", "[ ]", "[ ", "[0]", "[a]", "[x][y]",
    "][", ".", " ", "%20", "%2E", "%5B", "%5D", "%5b", "%5d", "%00", "\x00", "+", "_", "__Host-",
    "__Secure-", "Host-", "-", "%zz", "%", "%4", "%C3%A9", "%FF", "%C3", "é", "%3D", "%26", "%2B", "%01",
    "\x01", "\r", "\n", "%\r\n", "\t", "%09", "%0B", "%0C", "[\t]", "[%0D]",
]  # fmt: skip
VALUE_TOKENS = [
    "", "v", "1", "x y", "+", "%20", "%00", "\x00", "%zz", "%", "%FF", "%C3", "é", "=", "%3D", "%26", "%01",
    "\x01a", "\r\n", "%\n", "%\r", "%=", "=%",
]  # fmt: skip

any_escape = st.integers(0, 255).map(lambda byte: f"%{byte:02X}")  # whatever byte PHP may meet
any_ascii = st.characters(max_codepoint=0x7F)
name_token = st.one_of(st.sampled_from(NAME_TOKENS), st.sampled_from(NAME_TOKENS), any_escape, any_ascii)
name_text = st.lists(name_token, max_size=7).map("".join)
deep_name = st.builds(
    lambda base, depth, step, tail: base + step * depth + tail,
    st.sampled_from(["a", "b", "x.y", "__Host-a"]),
    st.integers(58, 70),
    st.sampled_from(["[x]", "[]", "[0]", "[ ]"]),
    st.sampled_from(["", "[", "[]", "x", "]", "[z"]),
)
value_text = st.lists(st.one_of(st.sampled_from(VALUE_TOKENS), any_escape, any_ascii), max_size=3).map(
    "".join
)


def _piece(name: str, has_value: bool, value: str) -> str:
    return name + ("=" + value if has_value else "")


piece = st.builds(_piece, st.one_of(name_text, name_text, name_text, deep_name), st.booleans(), value_text)
shallow_piece = st.builds(_piece, name_text, st.booleans(), value_text)
small_body = st.lists(st.one_of(piece, piece, piece, st.just("")), max_size=10).map("&".join)


def _big(count: int, templates: list[str], empty_every: int) -> str:
    out = []
    for i in range(count):
        template = templates[i % len(templates)]
        out.append("" if empty_every and i % empty_every == 0 else f"{template}{i % 7 if i % 2 else i}")
    return "&".join(out)


class Body(bytes):
    """A generated body whose repr stays short, so hypothesis can report 1000-variable bodies."""

    def __repr__(self) -> str:
        shown = bytes(self)
        return repr(shown) if len(shown) <= 300 else f"{shown[:300]!r}... ({len(shown)} bytes)"


big_body = st.builds(
    _big,
    st.integers(995, 1010),
    st.lists(shallow_piece, min_size=1, max_size=4),
    st.sampled_from([0, 0, 97, 250]),
)
body = st.integers(0, 29).flatmap(lambda pick: big_body if pick == 0 else small_body)
body_bytes = body.map(lambda text: Body(text.encode("utf-8")))


# Batches of 5 (GET, encode) or 2 (POST) bodies per example: 1,000 bodies reach PHP per property in CI.
@settings(max_examples=examples(ci=200))
@given(st.lists(body_bytes, min_size=5, max_size=5))
def test_decode_get_matches_parse_str(parse_str_php: LineWorker, bodies: list[bytes]) -> None:
    for raw in bodies:
        assert ordered(phpform.decode(raw, source="get")) == parse_str(parse_str_php, raw), raw


@settings(max_examples=examples(ci=500))
@given(st.lists(body_bytes, min_size=2, max_size=2))
def test_decode_post_matches_php_server(php_server: int, bodies: list[bytes]) -> None:
    for raw in bodies:
        assert ordered(phpform.decode(raw, source="post")) == php_request(php_server, body=raw)["post"], raw


@settings(max_examples=examples(ci=100, local=20))
@given(
    st.lists(
        small_body.map(str.encode).filter(lambda raw: all(0x21 <= c < 0x7F and c != 0x23 for c in raw)),
        max_size=3,
    )
)
def test_get_through_server_equals_parse_str(
    php_server: int, parse_str_php: LineWorker, bodies: list[bytes]
) -> None:
    for raw in bodies:
        expected = parse_str(parse_str_php, raw)
        assert php_request(php_server, query=raw.decode())["get"] == expected, raw


@settings(max_examples=examples(ci=100))
@given(st.lists(body_bytes, min_size=5, max_size=5))
def test_print_r_matches_php(print_r_php: LineWorker, bodies: list[bytes]) -> None:
    for raw in bodies:
        expected = bytes.fromhex(print_r_php.ask(raw.hex().encode()))
        assert (
            phpform.print_r(phpform.decode(raw, source="get")).encode("utf-8", "surrogateescape") == expected
        )


# --- generated data for encode ------------------------------------------------------------------

PHP_INT = st.integers(-(2**63), 2**63 - 1)
key = st.one_of(st.text(max_size=6), st.sampled_from(["a", "0", "5", "-1", "01", "x y", "[", "]"]), PHP_INT)
scalar = st.one_of(
    st.text(max_size=12),
    st.binary(max_size=6).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    PHP_INT,
    st.floats(),
    st.booleans(),
    st.none(),
)
tree = st.recursive(
    scalar,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(key, children, max_size=4)),
    max_leaves=25,
)


def serialize(value: Any) -> bytes:
    """PHP's serialize() format, so PHP sees exact bytes, ints, floats, bools and nulls."""
    if value is None:
        return b"N;"
    if isinstance(value, bool):
        return b"b:1;" if value else b"b:0;"
    if isinstance(value, int):
        return b"i:%d;" % value
    if isinstance(value, float):
        text = (
            "NAN"
            if math.isnan(value)
            else ("INF" if value > 0 else "-INF")
            if math.isinf(value)
            else repr(value)
        )
        return f"d:{text};".encode()
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
        return b's:%d:"%s";' % (len(raw), raw)
    items = value.items() if isinstance(value, dict) else enumerate(value)
    inner = b"".join(serialize(k) + serialize(v) for k, v in items)
    return b"a:%d:{%s}" % (len(value), inner)


def _distinct_php_keys(value: Any) -> bool:
    """PHP arrays cannot hold both 5 and "5"; such Python data has no PHP counterpart."""
    if isinstance(value, dict):
        seen = {str(k) if isinstance(k, int) or phpform._php_key(k) != k else k for k in value}
        return len(seen) == len(value) and all(_distinct_php_keys(v) for v in value.values())
    if isinstance(value, list):
        return all(_distinct_php_keys(v) for v in value)
    return True


data = st.one_of(st.lists(tree, max_size=4), st.dictionaries(key, tree, max_size=6)).filter(
    _distinct_php_keys
)


@settings(max_examples=examples(ci=200))
@given(st.lists(data, min_size=5, max_size=5))
def test_encode_matches_http_build_query(encode_php: LineWorker, batch: list[Any]) -> None:
    for value in batch:
        rfc1738, rfc3986 = encode_php.ask(serialize(value).hex().encode()).split(" ")
        assert phpform.encode(value) == bytes.fromhex(rfc1738).decode("ascii"), value
        assert phpform.encode(value, rfc3986=True) == bytes.fromhex(rfc3986).decode("ascii"), value
