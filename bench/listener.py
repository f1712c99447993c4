"""Listener throughput with wrk at 64 connections: ours vs the ceiling and vs the PHP page it replaces.

Servers on 127.0.0.1, each loaded by ``wrk -c64`` with pre-built form POSTs (every request a distinct
contact and transactionid, signed just before each run, so ours really verifies and stores each one;
the client spends nothing on HMAC during the run, as the platform signs on its own machine):

* ``bare_wN``: a Starlette endpoint that only reads the body and answers 200 (the ceiling), uvicorn with
  N worker processes, for each N used by ours;
* ``ours_sqlite``: the listener (signature check, PHP-form decode, validation, durable group-commit inbox
  on SQLite with an fsync per commit; the SQL projection runs in the same process), one worker: SQLite
  has one writer. Handlers yield to acknowledgements, so under a burst the projection falls behind;
  the bench prints how long after the load it had caught up;
* ``ours_sqlite_inbox``: the same without the projection (the acknowledgement path alone);
* ``ours_pg``: the same on PostgreSQL with ``--workers`` processes (default: one per CPU);
* ``php``: the hand-written peer the help article implies — a PHP page under php-fpm + nginx that reads
  ``$_POST`` and inserts the contact into MariaDB (no signature check, no dedupe).

Fairness, decided as follows. Ours is compared with the bare endpoint at the same number of uvicorn
processes, and both run with the same uvicorn options (httptools, uvloop, no access log). The PHP peer
gets the configuration a competent PHP deployment has: opcache on (timestamps not re-checked), a
static pool of ``--php-children`` (default 16: the page mostly waits on MariaDB's commit, so more
children than cores keep both cores busy) and persistent MariaDB connections. nginx opens a FastCGI
connection per request: with ``fastcgi_keep_conn`` each php-fpm child stays bound to one idle nginx
connection while requests on other connections queue, which here stalled requests until wrk's timeout.
Its process count is not capped to ours: php-fpm needs a process per concurrent request, which is the
point of the comparison. The machine has two cores shared by
client and servers, so wrk runs one thread by default (``--threads``), and every run prints wrk's own
CPU per request next to the server's (server CPU is the uvicorn process tree; MariaDB and PostgreSQL
are not children and are not counted).

Each server runs ``--rounds`` times and its best run counts (the machine is shared). Prints req/s,
latency and CPU per server, then ``ours_*_vs_bare`` (goal ≥ 0.5), ``ours_*_vs_php`` (goal ≥ 2) and
our p99.

Run: ``python bench/listener.py [--duration-s 10] [--rounds 2] [--workers N] [--no-projection]
[--split] [--only bare,ours_sqlite,php]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TOKEN = "bench-" + "k" * 40
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PG_ADMIN = os.environ.get("CONTACTSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}

LUA = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("me", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  local file, nthreads, path = args[1], tonumber(args[2]), args[3]
  requests, n, i = {}, 0, 0
  local line_no = 0
  for line in io.lines(file) do
    if line_no % nthreads == me then
      local tid, stamp, sig, body = string.match(line, "^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      local headers = {
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["webhook-id"] = tid, ["webhook-timestamp"] = stamp, ["webhook-signature"] = sig,
      }
      n = n + 1
      requests[n] = wrk.format("POST", path, headers, body)
    end
    line_no = line_no + 1
  end
end
function request()
  i = i + 1
  if i > n then i = 1; wrapped = true end
  return requests[i]
end
"""

PHP_PAGE = r"""<?php
// What the help article has every customer write: read $_POST, insert the contact. A competent
// PHP developer keeps the MariaDB connection open across requests (persistent PDO connection).
$db = new PDO('mysql:host=127.0.0.1;port=3306;dbname=%(db)s', 'root', '', [PDO::ATTR_PERSISTENT => true]);
$c = $_POST['contact'];
$st = $db->prepare('INSERT INTO contacts (transactionid, contact_id, email, phone, profile_url)'
    . ' VALUES (?, ?, ?, ?, ?)');
$st->execute([$_POST['transactionid'], $c['id'], $c['email'], $c['phone'], $c['profile_url']]);
echo 'OK';
"""


def bare_app() -> object:
    """The ceiling: read the body, answer 200."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request: Request) -> Response:
        await request.body()
        return Response(b'{"ok":true}', media_type="application/json")

    return Starlette(routes=[Route("/sync/{token}", endpoint, methods=["POST"])])


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: str
    server_cpu_us: float = float("nan")
    """Server process tree CPU per request (uvicorn servers; the PHP stack's MariaDB is not a child)."""
    wrk_cpu_us: float = float("nan")
    """wrk's own CPU per request: what the load generator takes from the two cores."""
    drain_s: float = float("nan")
    """After the last round: seconds until the in-process projection had caught up."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes] | None, what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)


@contextlib.contextmanager
def _process(
    command: list[str], *, env: dict[str, str], log: Path, port: int, what: str
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_port(port, process, what, log)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants so far (Linux /proc)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _tree_cpu_s(int(child))
    except (OSError, IndexError, ValueError):
        pass  # a process that just exited
    return total


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _wrk(
    name: str,
    url: str,
    path: str,
    args: argparse.Namespace,
    requests_file: Path,
    lua: Path,
    *,
    server: subprocess.Popen[bytes] | None = None,
) -> Result:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration_s}s", "--latency"]
    command += ["-s", str(lua), url, "--", str(requests_file), str(args.threads), path]
    server_before = _tree_cpu_s(server.pid) if server else float("nan")
    wrk_before = _children_cpu_s()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    wrk_cpu_s = _children_cpu_s() - wrk_before
    server_cpu_s = _tree_cpu_s(server.pid) - server_before if server else float("nan")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)\.?0*%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
        lat[pct] = _ms(value, unit)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return Result(
        name,
        rps,
        lat.get("50", float("nan")),
        lat.get("99", float("nan")),
        total,
        int(non_2xx.group(1)) if non_2xx else 0,
        errors.group(0) if errors else "",
        server_cpu_s / total * 1e6,
        wrk_cpu_s / total * 1e6,
    )


def _requests_file(path: Path, count: int, *, first: int = 0) -> None:
    """``count`` distinct signed requests, one per line: tid, timestamp, signature, body.

    Signed now: the listener accepts them for 5 minutes, so each of our runs gets a fresh file.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from contactsync.wire import signing
    from contactsync.wire.payload import SyncPayload

    key = signing.parse_secret(SECRET)
    stamp = int(time.time())
    base = 7_300_000_000_000_000_000
    with path.open("w") as out:
        for n in range(first, first + count):
            tid = base + n
            body = SyncPayload.from_wire(
                {
                    "transactionid": str(tid),
                    "contact": {
                        "id": 100_000 + n,
                        "email": f"contact{n}@example.com",
                        "phone": "+15551234567",
                        "profile_url": f"https://platform.example/contacts/{100_000 + n}",
                    },
                    "fields": [
                        {"id": 1, "name": "First Name", "value": "Jane"},
                        {"id": 2, "name": "Last Name", "value": "Doe"},
                    ],
                    "lead-status": {"score": 40, "label": "Warm"},
                }
            ).to_form()
            sig = signing.sign(key, msg_id=str(tid), timestamp=stamp, content=body)
            out.write(f"{tid}\t{stamp}\t{sig}\t{body}\n")


def _uvicorn(target: str, port: int, workers: int, *, factory: bool, app_dir: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log", "--workers", str(workers)]
    command += ["--http", "httptools", "--loop", "uvloop", "--lifespan", "on"]
    if factory:
        command.append("--factory")
    if app_dir:
        command += ["--app-dir", app_dir]
    return command


def _ours(
    name: str,
    db_url: str,
    workers: int,
    args: argparse.Namespace,
    tmp: Path,
    requests_file: Path,
    lua: Path,
    *,
    projection: bool,
    split: bool = False,
) -> Result:
    import sqlalchemy as sa

    from contactsync.db import listener as tables
    from contactsync.db.engine import create_engine
    from contactsync.db.migrate import upgrade

    upgrade(db_url, side="listener")  # once, before several workers race to create the schema
    port = _free_port()
    env = {
        **os.environ,
        "CONTACTSYNC_LISTENER_DATABASE_URL": db_url,
        "CONTACTSYNC_LISTENER_TOKEN": TOKEN,
        "CONTACTSYNC_LISTENER_SECRET": SECRET,
        "CONTACTSYNC_LISTENER_PROJECTION": "true" if projection else "false",
    }
    command = _uvicorn("contactsync.listener.serve:app_from_env", port, workers, factory=True)
    results = []
    handlers: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if split:  # handlers in their own process; the uvicorn workers only acknowledge
        handlers = _handlers_process(env, tmp / f"{name}-handlers.log")
        env = {**env, "CONTACTSYNC_LISTENER_RUN_HANDLERS": "false"}
    engine = create_engine(db_url)
    drain_s = float("nan")
    with handlers, _process(command, env=env, log=tmp / f"{name}.log", port=port, what=name) as server:
        for round_number in range(args.rounds):
            # distinct transactionids in every round: a repeat would only measure the duplicate path
            _requests_file(requests_file, args.requests, first=round_number * args.requests)
            url = f"http://127.0.0.1:{port}"
            results.append(
                _wrk(name, url, f"/sync/{TOKEN}", args, requests_file, lua, server=None if split else server)
            )
        if projection:  # handlers may have deferred to acknowledgements: how far behind were they?
            drain_s = _drain(engine)
    with engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(tables.inbox)).scalar_one()
    engine.dispose()
    sent = sum(r.requests - r.non_2xx for r in results)
    if sum(r.requests for r in results) > args.rounds * args.requests:
        raise RuntimeError(f"{name}: more requests than prepared; raise --requests")
    if stored < sent - args.connections * args.rounds:
        raise RuntimeError(f"{name}: {sent} requests acknowledged but only {stored} stored")
    best = max(results, key=lambda r: r.rps)
    best.drain_s = drain_s
    return best


def _drain(engine: object, timeout_s: float = 300.0) -> float:
    """Seconds from the end of the load until no handler run is pending (the projection caught up)."""
    import sqlalchemy as sa

    from contactsync.db import listener as tables

    assert isinstance(engine, sa.Engine)
    started = time.monotonic()
    query = sa.select(sa.func.count()).where(tables.handler_runs.c.state == "pending")
    while time.monotonic() - started < timeout_s:
        with engine.connect() as conn:
            if conn.execute(query).scalar_one() == 0:
                break
        time.sleep(0.1)
    return time.monotonic() - started


@contextlib.contextmanager
def _handlers_process(env: dict[str, str], log: Path) -> Iterator[None]:
    command = [sys.executable, "-m", "contactsync", "listen", "--handlers-only"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _pg_database() -> Iterator[str]:
    import psycopg

    admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    name = "cs_bench_" + uuid.uuid4().hex[:10]
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _php(args: argparse.Namespace, tmp: Path, requests_file: Path, lua: Path) -> Result:
    import pymysql

    fpm = shutil.which("php-fpm8.2") or shutil.which("php-fpm")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if fpm is None:
        raise RuntimeError("php-fpm is not installed")
    db = "cs_bench_" + uuid.uuid4().hex[:10]
    admin = pymysql.connect(**MARIADB, autocommit=True)  # type: ignore[arg-type]
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
        cur.execute(
            f"CREATE TABLE `{db}`.contacts (id BIGINT AUTO_INCREMENT PRIMARY KEY, transactionid VARCHAR(32),"
            " contact_id VARCHAR(32), email VARCHAR(320), phone VARCHAR(64), profile_url TEXT)"
        )
    www = tmp / "www"
    www.mkdir()
    (www / "index.php").write_text(PHP_PAGE % {"db": db})
    port = _free_port()
    sock = tmp / "fpm.sock"
    (tmp / "fpm.conf").write_text(
        f"[global]\npid = {tmp}/fpm.pid\nerror_log = {tmp}/fpm.log\ndaemonize = no\n"
        f"[www]\nuser = root\ngroup = root\nlisten = {sock}\npm = static\n"
        f"pm.max_children = {args.php_children}\ncatch_workers_output = yes\n"
        "php_admin_value[opcache.enable] = 1\nphp_admin_value[opcache.validate_timestamps] = 0\n"
    )
    (tmp / "nginx.conf").write_text(
        f"worker_processes {args.nginx_workers};\ndaemon off;\nuser root root;\npid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/nginx.log;\n"
        "events { worker_connections 1024; }\n"
        "http {\n  access_log off;\n"
        f"  client_body_temp_path {tmp}/body; fastcgi_temp_path {tmp}/fcgi; proxy_temp_path {tmp}/proxy;\n"
        f"  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    root {www};\n"
        "    location / {\n      include /etc/nginx/fastcgi_params;\n"
        f"      fastcgi_param SCRIPT_FILENAME {www}/index.php;\n      fastcgi_pass unix:{sock};\n"
        "    }\n  }\n}\n"
    )
    try:
        fpm_log = tmp / "fpm.out"
        with fpm_log.open("ab") as out:
            fpm_process = subprocess.Popen(
                [fpm, "-R", "-F", "-y", str(tmp / "fpm.conf")], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + 30
            while not sock.exists():
                if fpm_process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"php-fpm did not start: {fpm_log.read_text()[-2000:]}")
                time.sleep(0.05)
            command = [nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)]
            with _process(command, env=dict(os.environ), log=tmp / "nginx.out", port=port, what="nginx"):
                runs = [
                    _wrk("php", f"http://127.0.0.1:{port}", "/index.php", args, requests_file, lua)
                    for _ in range(args.rounds)
                ]
                result = max(runs, key=lambda r: r.rps)
        finally:
            fpm_process.terminate()
            fpm_process.wait(30)
        with admin.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{db}`.contacts")
            (stored,) = cur.fetchone()  # type: ignore[misc]
        if stored < sum(r.requests - r.non_2xx for r in runs) - args.connections * args.rounds:
            raise RuntimeError(f"php: {sum(r.requests for r in runs)} requests but only {stored} rows")
        return result
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        admin.close()


CONTESTANTS = ("bare", "ours_sqlite", "ours_sqlite_inbox", "ours_sqlite_split", "ours_pg", "php")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads (one leaves a core to the server)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="uvicorn processes: PostgreSQL listener, bare",
    )
    parser.add_argument(
        "--sqlite-workers", type=int, default=1, help="uvicorn processes: SQLite listener (one writer), bare"
    )
    parser.add_argument("--php-children", type=int, default=16)
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument(
        "--requests", type=int, default=150_000, help="distinct pre-signed requests per run (≥ 10 s at 15k/s)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs per server; the best one counts")
    parser.add_argument("--no-projection", action="store_true", help="inbox only, no SQL projection")
    parser.add_argument(
        "--split", action="store_true", help="also: SQLite with the handlers in their own process"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {', '.join(CONTESTANTS)} (default: all)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package wrk)")
    chosen = set(filter(None, args.only.split(",")))
    only = chosen or {name for name in CONTESTANTS if args.split or name != "ours_sqlite_split"}
    if args.no_projection:
        only.discard("ours_sqlite_inbox")
    with tempfile.TemporaryDirectory(prefix="cs-bench-listener-") as tmp_name:
        tmp = Path(tmp_name)
        requests_file, lua = tmp / "requests.tsv", tmp / "requests.lua"
        _requests_file(requests_file, args.requests)
        lua.write_text(LUA)
        results: dict[str, Result] = {}
        here = str(Path(__file__).resolve().parent)
        for workers in sorted({args.sqlite_workers, args.workers}) if "bare" in only else ():
            port = _free_port()
            name = f"bare_w{workers}"
            with _process(
                _uvicorn("listener:bare_app", port, workers, factory=True, app_dir=here),
                env=dict(os.environ),
                log=tmp / f"{name}.log",
                port=port,
                what=name,
            ) as server:
                url = f"http://127.0.0.1:{port}"
                runs = [
                    _wrk(name, url, f"/sync/{TOKEN}", args, requests_file, lua, server=server)
                    for _ in range(args.rounds)
                ]
                results[name] = max(runs, key=lambda r: r.rps)
        projection = not args.no_projection
        common = (args, tmp, requests_file, lua)
        sqlite_runs = {
            "ours_sqlite": {"projection": projection},
            "ours_sqlite_inbox": {"projection": False},  # the acknowledgement path alone
            "ours_sqlite_split": {"projection": True, "split": True},  # handlers in their own process
        }
        for number, (name, options) in enumerate(sqlite_runs.items()):
            if name in only:
                db_url = f"sqlite:///{tmp}/l{number}.db"
                results[name] = _ours(name, db_url, args.sqlite_workers, *common, **options)
        if "ours_pg" in only:
            with _pg_database() as pg_url:
                results["ours_pg"] = _ours("ours_pg", pg_url, args.workers, *common, projection=projection)
        if "php" in only:
            results["php"] = _php(args, tmp, requests_file, lua)
    _report(args, results)


def _report(args: argparse.Namespace, results: dict[str, Result]) -> None:
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration_s}s, "
        f"php-fpm children={args.php_children} nginx workers={args.nginx_workers}, "
        f"projection={'off' if args.no_projection else 'on'}, listener workers: sqlite={args.sqlite_workers} "
        f"pg={args.workers}; load average {os.getloadavg()[0]:.2f}"
    )
    for r in results.values():
        drained = f"   projection caught up {r.drain_s:.1f} s after" if r.drain_s == r.drain_s else ""
        print(
            f"  {r.name:<18} {r.rps:>9.0f} req/s   p50 {r.p50_ms:7.2f} ms   p99 {r.p99_ms:7.2f} ms   "
            f"server CPU {r.server_cpu_us:5.0f} us/req   wrk CPU {r.wrk_cpu_us:3.0f} us/req   "
            f"requests {r.requests}  non-2xx {r.non_2xx}  {r.errors}{drained}"
        )
    php = results["php"].rps if "php" in results else float("nan")
    ours = [(name, args.sqlite_workers) for name in ("ours_sqlite", "ours_sqlite_inbox", "ours_sqlite_split")]
    for name, workers in [*ours, ("ours_pg", args.workers)]:
        if name not in results:
            continue
        r = results[name]
        bare = results.get(f"bare_w{workers}")
        if bare is not None:
            print(f"{name}_vs_bare={r.rps / bare.rps:.2f}  (same number of uvicorn workers)")
        print(f"{name}_vs_php={r.rps / php:.2f}")
        print(f"{name}_p99_ms={r.p99_ms:.2f}")


if __name__ == "__main__":
    main()
