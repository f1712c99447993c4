"""Write tests/vectors/phpform.json: what a real PHP 8 makes of curated tricky form bodies.

Every rule of spec/wire.md ("PHP decoding rules") has cases here, each with a comment. Each body is
decoded by PHP twice: as a urlencoded POST through ``php -S`` (``$_POST``) and by ``parse_str`` (what
``$_GET`` gets). A few ``http_build_query`` cases are recorded too. The unit tests replay the file
without PHP, so the codec stays checked where PHP is not installed.

Run: ``python scripts/gen_phpform_vectors.py [--php /usr/bin/php] [--out tests/vectors/phpform.json]``.

Format: strings (bodies, keys, values) are JSON strings when they are valid UTF-8, else ``{"hex": …}``;
a PHP array is a list of ``[key, value]`` pairs in PHP's order, int keys as JSON numbers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INI = {
    "display_errors": "0",
    "log_errors": "0",
    "max_input_vars": "1000",
    "max_input_nesting_level": "64",
    "arg_separator.input": "&",
    "arg_separator.output": "&",
    "precision": "14",
    "filter.default": "unsafe_raw",
}
DUMPER = r"""
function cs_dump($v) {
    if (!is_array($v)) { return bin2hex((string) $v); }
    $out = [];
    foreach ($v as $k => $x) { $out[] = [is_int($k) ? $k : bin2hex($k), cs_dump($x)]; }
    return $out;
}
"""
PARSE_STR = (
    DUMPER
    + r"""
$out = [];
foreach (json_decode(stream_get_contents(STDIN)) as $hex) {
    $result = [];
    parse_str(hex2bin($hex), $result);
    $out[] = cs_dump($result);
}
echo json_encode($out);
"""
)
BUILD_QUERY = r"""
$out = [];
foreach (json_decode(stream_get_contents(STDIN), true) as $data) {
    $out[] = [http_build_query($data), http_build_query($data, '', '&', PHP_QUERY_RFC3986)];
}
echo json_encode($out);
"""
ROUTER = "<?php\n" + DUMPER + "echo json_encode(cs_dump($_POST));\n"

DEEP64 = "a" + "[x]" * 64
DEEP65 = "a" + "[x]" * 65

# (comment, body): every case is decoded both as POST and by parse_str.
DECODE_CASES: list[tuple[str, str | bytes]] = [
    # 1. leading spaces, '.' and ' ' in the top-level name only
    ("leading spaces of a name are dropped", "  a=1"),
    ("'.' and ' ' become '_' in the top-level name", "a.b=1&c d=2&e+f=3"),
    ("only the top-level name is mangled, not indexes", "a.b[c.d]=1&x y[p q]=2"),
    ("a name of only spaces is empty and dropped", "   =1&b=2"),
    ("a leading '.' is mangled, not dropped", ".a=1"),
    # 2. the first ']' ends an index; [] and [ ] append at max int key + 1
    ("[] appends after the largest int key", "a[]=1&a[]=2&a[5]=x&a[]=y"),
    ("[ ] (one space) appends too", "a[ ]=1&a[ ]=2"),
    ("[  ] (two spaces) is the key '  ', not an append", "a[  ]=1"),
    (
        "any one C isspace() char opens an append: [\\t] [\\n] [\\r] [\\v] [\\f]",
        "a[%09]=1&a[%0A]=2&a[%0D]=3&a[%0B]=4&a[%0C]=5",
    ),
    ("only one such char is skipped, and only before ']'", "a[%09%20]=1&a[%0Dx]=2&a[x%0D]=3&b[c][%09]=4"),
    ("an index ends at the first ']'", "a[b]c]=1&a[x]]=2"),
    ("'[' inside an index is kept", "a[b[c]=1"),
    ("[] appends after a negative key at key+1 (PHP < 8.3)", "a[-5]=x&a[]=y"),
    ("[] after only string keys starts at 0", "a[x]=1&a[]=2"),
    ("[] cannot append after PHP_INT_MAX: dropped", "a[9223372036854775807]=x&a[]=y&a[b]=z"),
    ("[] fills PHP_INT_MAX once, then fails", "a[9223372036854775806]=x&a[]=y&a[]=z"),
    ("nested appends make fresh arrays", "a[][x]=1&a[][x]=2&a[1][y]=3"),
    # 3. canonical decimals are int keys; others stay strings
    ("canonical decimals become int keys", "a[0]=z&a[5]=f&a[-1]=m"),
    ("non-canonical numbers stay strings", "a[01]=1&a[1.5]=2&a[+1]=3&a[ 2]=4&a[-0]=5&a[1e3]=6&a[0x1]=7"),
    ("PHP's int range decides", "a[9223372036854775807]=1&a[9223372036854775808]=2"),
    ("PHP's int range decides (negative)", "a[-9223372036854775808]=1&a[-9223372036854775809]=2"),
    ("top-level names become int keys too", "5=a&-3=b&007=c&-0=d"),
    # 4. unclosed '[' and trailing text
    ("an unclosed '[' becomes '_' when no group was complete", "a[b=1"),
    ("... and '.', ' ', '[' after it become '_' too", "a[b.c d[e=1"),
    ("a bare trailing '['", "a[=1"),
    ("after complete groups the unclosed tail is dropped", "a[b][c=1"),
    ("after an append group the unclosed tail appends", "a[][b=1"),
    ("text after ']' that is not '[' is ignored", "a[b]x=1&a[c]x[d]=2"),
    ("a space before an unclosed '['", "a [b=1"),
    ("a NUL (%00) cuts the name", "a%00b=1&c[d%00e]=2&f[%00]=3"),
    ("a NUL cuts the name to nothing: dropped", "%00a=1"),
    # 5. duplicates
    ("last value wins, position of the first kept", "a=1&b=2&a=3"),
    ("a scalar is replaced by an array", "a=1&a[]=2"),
    ("an array is replaced by a scalar", "a[]=2&a=1"),
    ("a nested scalar is replaced by an array", "a[x]=1&a[x][y]=2&a[z]=3"),
    ("a nested array is replaced by a scalar", "a[x][y]=2&a[x]=1"),
    ("a replaced array starts appending from 0 again", "a[]=1&a[]=2&a=s&a[]=3"),
    # 6. limits
    ("64 levels of nesting are allowed", DEEP64 + "=deep"),
    ("65 levels delete the whole top-level variable", "a=1&b=2&" + DEEP65 + "=deep&c=3"),
    ("a deleted variable can come back, at the end", DEEP65 + "=deep&b=2&a=back"),
    ("an unclosed 65th group still counts as a level", "a=1&" + DEEP64 + "[y=2"),
    ("65 levels under an int name delete the int key", "5=1&5" + "[x]" * 65 + "=2"),
    ("1001 variables: GET/parse_str keep 1000, POST keeps 1001", "&".join(f"v{i}=1" for i in range(1001))),
    ("1002 variables: POST keeps 1001", "&".join(f"v{i}=1" for i in range(1002))),
    ("POST counts empty pieces, GET does not", "&&" + "&".join(f"v{i}=1" for i in range(999))),
    ("dropped names still count", "&".join(["=x"] * 998 + ["a=1", "b=2", "c=3"])),
    # 7. decoding
    ("an empty body", ""),
    ("an empty name is dropped", "=1&b=2"),
    ("a name without '=' has the empty value", "a&b=&c"),
    ("'+' is a space in names and values", "a+b=c+d&e[f+g]=h%2Bi"),
    ("a malformed escape stays literal", "a=%zz&b=%&c=%4&d=%%41&e%zz=1"),
    ("%5B and %5D act as brackets", "a%5Bb%5D=1&c%5b%5d=2"),
    ("only the first '=' separates", "a=b=c&d%3De=f"),
    ("escaped '&' does not split", "a=x%26y&b%26c=1"),
    ("bytes are not checked as UTF-8", "%FF=%FE&a[%C3]=%C3%A9&b=%80%80"),
    ("raw UTF-8 passes through", "é=ü&ö[ä]=ß"),
    ("a NUL in a value is kept", "a=x%00y"),
    # 8. separators
    ("';' does not separate", "a=1;b=2"),
    ("GET skips empty pieces; POST drops them as empty names", "&&a=1&&b=2&&"),
    ("a raw NUL: parse_str stops there, POST cuts only the name", b"a=1\x00x&b\x00c=2&d=3"),
    # 9. cookie prefixes made by mangling
    ("__Host- as sent is kept", "__Host-a=1&__Secure-b=2"),
    ("leading spaces are not mangling", "  __Host-a=1"),
    ("'.' or ' ' mangled into __Host-/__Secure- is dropped", "..Host-a=1&_.Secure-b=2&_ Host-c=3"),
    ("'[' mangled into __Host- is dropped too", "_[Host-b=2"),
    (
        "an index spelling __Host- is dropped, its parents stay",
        "b[__Host-x]=1&c[d][__Secure-y]=2&e[x][__Host-q][r]=5",
    ),
    ("an index may use the prefix the name was sent with", "__Host-a[__Host-b]=1&__Secure-a[__Secure-b]=2"),
    # everything together: a realistic payload
    (
        "a sync payload",
        "transactionid=7262734018228486144&contact%5Bid%5D=42&contact%5Bemail%5D=jane%40example.com"
        "&fields%5B0%5D%5Bid%5D=3&fields%5B0%5D%5Bname%5D=First+Name&fields%5B0%5D%5Bvalue%5D=Jan%C3%A9"
        "&lead-status%5Bscore%5D=40&lead-status%5Blabel%5D=Warm",
    ),
]

# (comment, data as PHP's json_decode(…, true) reads it)
ENCODE_CASES: list[tuple[str, Any]] = [
    ("nested maps and lists, explicit indices", {"a": {"b": [1, 2]}, "c": "x y"}),
    ("unreserved set, '~' and space differ between RFC 1738 and 3986", {"~ *'()!": "~ *'()!-_."}),
    ("bools, null, empty arrays", {"t": True, "f": False, "n": None, "e": [], "q": {"x": []}}),
    ("floats use precision=14", {"a": 0.1, "b": 1e20, "c": 0.30000000000000004, "d": 1.5e-7, "e": 100.0}),
    ("UTF-8 and brackets in keys", {"clé[x]": "é", "": {"": "empty keys"}}),
    ("a top-level list", ["x", ["y", "z"]]),
]


def _typed(raw: bytes) -> str | dict[str, str]:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": raw.hex()}


def _from_dump(dumped: Any) -> Any:
    if isinstance(dumped, str):
        return _typed(bytes.fromhex(dumped))
    return [[key if isinstance(key, int) else _typed(bytes.fromhex(key)), _from_dump(v)] for key, v in dumped]


def _php(php: str, code: str, payload: Any) -> Any:
    args = [php, *(f"-d{key}={value}" for key, value in INI.items()), "-r", code]
    done = subprocess.run(args, input=json.dumps(payload).encode(), capture_output=True, check=True)
    return json.loads(done.stdout)


def _post_all(php: str, bodies: list[bytes]) -> list[Any]:
    with tempfile.TemporaryDirectory() as root, socket.socket() as sock:
        (Path(root) / "router.php").write_text(ROUTER)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        args = [
            php,
            *(f"-d{key}={value}" for key, value in INI.items()),
            "-S",
            f"127.0.0.1:{port}",
            "router.php",
        ]
        server = subprocess.Popen(args, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            out = []
            for body in bodies:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                headers = {"Content-Type": "application/x-www-form-urlencoded"}
                conn.request("POST", "/", body=body, headers=headers)
                out.append(_from_dump(json.loads(conn.getresponse().read())))
                conn.close()
            return out
        finally:
            server.terminate()
            server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--php", default=shutil.which("php") or "php")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "vectors" / "phpform.json")
    args = parser.parse_args()

    bodies = [body if isinstance(body, bytes) else body.encode() for _, body in DECODE_CASES]
    got = _php(args.php, PARSE_STR, [body.hex() for body in bodies])
    parse_str = [_from_dump(dumped) for dumped in got]
    posted = _post_all(args.php, bodies)
    version = subprocess.run(
        [args.php, "-r", "echo PHP_VERSION;"], capture_output=True, check=True, text=True
    )

    decode = []
    for (comment, _), body, php_get, php_post in zip(DECODE_CASES, bodies, parse_str, posted, strict=True):
        for source, expected in (("post", php_post), ("get", php_get)):
            decode.append({"comment": comment, "source": source, "body": _typed(body), "expected": expected})
    built = _php(args.php, BUILD_QUERY, [data for _, data in ENCODE_CASES])
    encode = [
        {"comment": comment, "data": data, "rfc1738": rfc1738, "rfc3986": rfc3986}
        for (comment, data), (rfc1738, rfc3986) in zip(ENCODE_CASES, built, strict=True)
    ]
    document = {
        "generator": "scripts/gen_phpform_vectors.py",
        "php_version": version.stdout,
        "ini": INI,
        "decode": decode,
        "encode": encode,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({key: value for key, value in document.items() if key not in ("decode", "encode")})[:-1]
    ]
    for section in ("decode", "encode"):  # one case per line: reviewable diffs, modest size
        cases = ",\n".join(json.dumps(case, ensure_ascii=False) for case in document[section])
        lines.append(f', "{section}": [\n{cases}\n]')
    args.out.write_text("".join(lines) + "}\n")
    print(f"wrote {len(decode)} decode and {len(encode)} encode vectors to {args.out}")


if __name__ == "__main__":
    main()
