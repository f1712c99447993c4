"""Rendered URLs read back by real PHP: ``parse_url`` + ``parse_str`` return exactly the contact's values.

One long-lived ``php`` process answers every Hypothesis example over a pipe (one JSON line each),
so hundreds of examples cost one PHP start-up.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from contactsync.shortcodes import compile, php_rawurlencode, php_urlencode
from contactsync.shortcodes.encoding import URL_CHARS
from support import examples, run_php

pytestmark = pytest.mark.php

READER = r"""
while (($line = fgets(STDIN)) !== false) {
    $url = rtrim($line, "\n");
    $parts = parse_url($url);
    if ($parts === false) { echo "null\n"; fflush(STDOUT); continue; }
    $query = [];
    parse_str($parts['query'] ?? '', $query);
    echo json_encode([
        'scheme' => $parts['scheme'] ?? null,
        'host' => $parts['host'] ?? null,
        'port' => $parts['port'] ?? null,
        'path_raw' => array_map(fn ($s) => base64_encode(rawurldecode($s)), explode('/', $parts['path'])),
        'fragment' => base64_encode(rawurldecode($parts['fragment'] ?? '')),
        'query' => array_map(fn ($v) => is_string($v) ? base64_encode($v) : null, $query),
    ]), "\n";
    fflush(STDOUT);
}
"""

TEMPLATE = (
    "https://api.example.com:8443/c/[#A#]/[#LOWER B#]/x?a=[#A#]&b=[#B#]&c=[#TRIM C#]&u=[#UPPER A#]"
    '&d=[#DEFAULT:"none" C#]#frag=[#D#]'
)
# any Unicode scalar value (lone surrogates cannot be UTF-8: they render as U+FFFD, see the unit tests)
VALUE = st.text(
    alphabet=st.one_of(
        st.sampled_from("&=#?/%+ \n\r\t[]~.;:@!$'()*,\"<>\\^`{|}\x00"), st.characters(codec="utf-8")
    )
)


@pytest.fixture(scope="module")
def php_reader(php: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [php, "-d", "display_errors=stderr", "-r", READER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    with proc:
        yield proc


def php_read(proc: subprocess.Popen[bytes], url: str) -> dict[str, Any]:
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert "\n" not in url
    proc.stdin.write(url.encode("ascii") + b"\n")
    proc.stdin.flush()
    answer = json.loads(proc.stdout.readline())
    assert answer is not None, f"PHP parse_url rejected {url}"
    return answer  # type: ignore[no-any-return]


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


@hsettings(max_examples=examples(ci=500))
@given(a=VALUE, b=VALUE, c=VALUE, d=VALUE)
@example(a="", b="", c="", d="")
@example(a="../..", b="%2F%", c=" x ", d="#?&=")
@example(a="é&=#?/%\n", b="Straße ZOË", c="\t", d="🙂")
def test_php_reads_back_exactly_the_values(
    php_reader: subprocess.Popen[bytes], a: str, b: str, c: str, d: str
) -> None:
    compiled = compile(TEMPLATE)
    url = compiled.render({"A": a, "B": b, "C": c, "D": d})
    assert set(url) <= URL_CHARS

    split = urlsplit(url)
    assert (split.scheme, split.hostname, split.port) == ("https", "api.example.com", 8443)
    assert split.path.split("/")[1:] == ["c", php_rawurlencode(a), php_rawurlencode(b.lower()), "x"]
    assert unquote(split.fragment) == "frag=" + d

    seen = php_read(php_reader, url)
    assert (seen["scheme"], seen["host"], seen["port"]) == ("https", "api.example.com", 8443)
    assert seen["path_raw"] == [b64(s) for s in ["", "c", a, b.lower(), "x"]]
    assert seen["fragment"] == b64("frag=" + d)
    expected = {"a": a, "b": b, "c": c.strip(), "u": a.upper(), "d": c or "none"}
    assert seen["query"] == {k: b64(v) for k, v in expected.items()}


def test_encoders_match_php_byte_for_byte(php: str) -> None:
    samples = [chr(i) for i in range(256)] + ["a b+c~d", "é日本🙂", "\x7f\u2028", "%41", ""]
    out = run_php(
        php,
        "$in = json_decode(stream_get_contents(STDIN));"
        "echo json_encode(array_map(fn ($s) => [urlencode($s), rawurlencode($s)], $in));",
        json.dumps(samples).encode(),
    )
    assert json.loads(out) == [[php_urlencode(s), php_rawurlencode(s)] for s in samples]
