"""Form codec throughput against PHP itself: our decode/encode vs ``parse_str``/``http_build_query``.

Two bodies, built the way the platform builds a sync payload: a typical one (~300 bytes: contact and
lead status) and a large one (~15 KB: 50 custom fields and 60 activities). PHP times its own loop with
``hrtime`` (and its CPU time with ``getrusage``) inside one process, on the same bodies and data (sent
as ``serialize()`` bytes); outputs are checked to be identical first. Prints ops/s per body and the
ratios ``decode_vs_php`` and ``encode_vs_php`` (ours / PHP by CPU time, geometric mean over the two
bodies; higher is better), and the same by wall clock as ``…_wall``: on a shared machine the CPU-time
ratio is the stable one. The first line, ``implementation=c|python``, says which codec was timed: the C
accelerator when it is built, else the pure-Python reference (``--python`` times the reference anyway).

Run: ``python bench/wire.py [--rounds 15] [--seconds 0.05] [--python]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

from contactsync.wire import phpform

PHP_BENCH = r"""
$cases = json_decode(stream_get_contents(STDIN), true);
$rounds = (int) $argv[1];
$seconds = (float) $argv[2];
$out = [];
function cpu() {
    $u = getrusage();
    return $u['ru_utime.tv_sec'] + $u['ru_utime.tv_usec'] / 1e6
        + $u['ru_stime.tv_sec'] + $u['ru_stime.tv_usec'] / 1e6;
}
function rate($fn, $rounds, $seconds) {
    $n = 1; $wall = 0.0; $cpu = 0.0;
    while (true) {  // calibrate: enough iterations for $seconds per round
        $t = hrtime(true); for ($i = 0; $i < $n; $i++) { $fn(); } $dt = (hrtime(true) - $t) / 1e9;
        if ($dt > $seconds / 4) { break; }
        $n *= 2;
    }
    $n = max(1, (int) ($n * $seconds / max($dt, 1e-9)));
    for ($r = 0; $r < $rounds; $r++) {
        $c = cpu(); $t = hrtime(true);
        for ($i = 0; $i < $n; $i++) { $fn(); }
        $dt = (hrtime(true) - $t) / 1e9; $dc = cpu() - $c;
        $wall = max($wall, $n / $dt); $cpu = max($cpu, $n / max($dc, 1e-6));
    }
    return [$wall, $cpu];
}
foreach ($cases as $name => $case) {
    $body = hex2bin($case['body']);
    $data = unserialize(hex2bin($case['data']));
    if (http_build_query($data) !== $body) { fwrite(STDERR, "$name: http_build_query differs\n"); exit(1); }
    $out[$name] = [
        'decode' => rate(function () use ($body) { parse_str($body, $r); }, $rounds, $seconds),
        'encode' => rate(function () use ($data) { http_build_query($data); }, $rounds, $seconds),
    ];
}
echo json_encode($out);
"""


PHP_DUMP = r"""
function cs_dump($v) {
    if (!is_array($v)) { return bin2hex($v); }
    $out = [];
    foreach ($v as $k => $x) { $out[] = [$k, cs_dump($x)]; }
    return $out;
}
$out = [];
foreach (json_decode(stream_get_contents(STDIN), true) as $name => $case) {
    parse_str(hex2bin($case['body']), $result);
    $out[$name] = json_encode(cs_dump($result));
}
echo json_encode($out);
"""


def typical() -> dict[str, Any]:
    return {
        "transactionid": "7262734018228486144",
        "contact": {
            "id": 42,
            "email": "jane.doe@example.com",
            "phone": "+15551234567",
            "profile_url": "https://app.example.com/contacts/42",
        },
        "lead-status": {"score": 40, "label": "Warm"},
    }


def large() -> dict[str, Any]:
    data = typical()
    data["fields"] = [
        {"id": i, "name": f"Custom Field {i}", "value": f"value {i} – Zoë & co"} for i in range(1, 51)
    ]
    date = "2026-11-27 09:30:00"
    data["campaigns-opened"] = [{"id": i, "name": f"Newsletter #{i}", "open_date": date} for i in range(20)]
    data["links-clicked"] = [
        {"url": f"https://www.example.com/offers/{i}?utm_source=mail&utm_medium=email", "clicks": i}
        for i in range(20)
    ]
    data["pages-visited"] = [
        {"page": f"https://www.example.com/p/{i}", "visit_date": date} for i in range(20)
    ]
    return data


def serialize(value: Any) -> bytes:
    """PHP serialize() bytes of str/int/dict/list data, so PHP times the very same array."""
    if isinstance(value, int):
        return b"i:%d;" % value
    if isinstance(value, str):
        raw = value.encode()
        return b's:%d:"%s";' % (len(raw), raw)
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return b"a:%d:{%s}" % (len(value), b"".join(serialize(k) + serialize(v) for k, v in items))


def rate(fn: Callable[[], object], *, rounds: int, seconds: float) -> tuple[float, float]:
    """Best ops/s over ``rounds`` timed loops of about ``seconds`` each: (wall clock, CPU time)."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        took = time.perf_counter() - start
        if took > seconds / 4:
            break
        n *= 2
    n = max(1, int(n * seconds / max(took, 1e-9)))
    wall = cpu = 0.0
    for _ in range(rounds):
        cpu_start, start = time.process_time(), time.perf_counter()
        for _ in range(n):
            fn()
        wall = max(wall, n / (time.perf_counter() - start))
        cpu = max(cpu, n / max(time.process_time() - cpu_start, 1e-6))
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.05)
    parser.add_argument("--python", action="store_true", help="time the pure-Python reference codec")
    args = parser.parse_args()
    if args.python:
        encode, decode, implementation = phpform._encode_py, phpform._decode_py, "python"
    else:
        encode, decode, implementation = phpform.encode, phpform.decode, phpform.IMPLEMENTATION
    print(f"implementation={implementation}")
    php = shutil.which("php")
    if php is None:
        raise SystemExit("php-cli is needed as the baseline")

    cases = {"typical": typical(), "large": large()}
    bodies = {name: encode(data) for name, data in cases.items()}
    payload = {
        name: {"body": bodies[name].encode().hex(), "data": serialize(d).hex()} for name, d in cases.items()
    }
    dumped = json.loads(_php(php, PHP_DUMP, payload))
    for name, body in bodies.items():
        expected = json.loads(dumped[name])
        if _ordered(decode(body, source="get")) != expected:
            raise SystemExit(f"{name}: decode differs from parse_str")

    # Rounds alternate between PHP and us, so load from other processes hits both alike; CPU time
    # (getrusage / process_time) is reported besides wall time because it ignores waiting for a core.
    best: dict[tuple[str, str, str, str], float] = {}

    def keep(key: tuple[str, str, str, str], value: float) -> None:
        best[key] = max(best.get(key, 0.0), value)

    for _ in range(args.rounds):
        theirs = json.loads(_php(php, PHP_BENCH, payload, "1", str(args.seconds)))
        for name, data in cases.items():
            body = bodies[name]
            ours = {
                "decode": rate(functools.partial(decode, body, source="get"), rounds=1, seconds=args.seconds),
                "encode": rate(functools.partial(encode, data), rounds=1, seconds=args.seconds),
            }
            for op in ("decode", "encode"):
                for clock, index in (("wall", 0), ("cpu", 1)):
                    keep((name, op, "ours", clock), ours[op][index])
                    keep((name, op, "php", clock), theirs[name][op][index])

    ratios: dict[tuple[str, str], list[float]] = {}
    for name, body in bodies.items():
        for op in ("decode", "encode"):
            detail = []
            for clock in ("cpu", "wall"):
                ours_rate, php_rate = best[name, op, "ours", clock], best[name, op, "php", clock]
                ratios.setdefault((op, clock), []).append(ours_rate / php_rate)
                detail.append(
                    f"ours_{clock}_ops_s={ours_rate:.0f} php_{clock}_ops_s={php_rate:.0f} "
                    f"ratio_{clock}={ours_rate / php_rate:.3f}"
                )
            print(
                f"body={name} bytes={len(body)} vars={phpform.measure(body).variables} op={op} "
                + " ".join(detail)
            )
    for (op, clock), values in ratios.items():
        suffix = "" if clock == "cpu" else "_wall"
        print(f"{op}_vs_php{suffix}={math.prod(values) ** (1 / len(values)):.3f}")


def _php(php: str, code: str, payload: dict[str, Any], *args: str) -> str:
    done = subprocess.run(
        [php, "-r", code, *args], input=json.dumps(payload).encode(), capture_output=True, check=True
    )
    return done.stdout.decode()


def _ordered(value: Any) -> Any:
    if isinstance(value, dict):
        return [[key, _ordered(item)] for key, item in value.items()]
    return value.encode("utf-8", "surrogateescape").hex()


if __name__ == "__main__":
    main()
