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

Every server is started once and kept up; ``--rounds`` rounds then run each of them in turn (the
order reversed every other round), and each server's best round counts (the machine is shared). Server
CPU is counted from the start of a run until the projection has caught up, so the handlers' deferred
work is in the figure; for PostgreSQL the CPU of the database backends serving our listener is counted
too, from /proc (``pg_stat_statements`` times are wall clock, and it is not preloaded here). The report
ends with every goal of the performance issue next to its figure: server CPU per request (ack path
≤ 90 µs, with projection ≤ 130 µs; bare for reference), req/s vs bare (≥ 0.6 with projection on SQLite,
≥ 0.5 on PostgreSQL ×2), vs PHP (≥ 2) and p99 vs PHP's.

``--sustained`` then loads ours_sqlite and ours_pg for ``--sustained-s`` (60) at
``--sustained-fraction`` (0.7) of the peak just measured, paced by wrk itself: a LuaJIT ``delay()``
gives each request a slot on a fixed schedule (wrk2 is not installed here). It prints the achieved rate,
p50/p99 (from each request's actual send) and the projection's backlog sampled every second, and says
whether its lag grew.

Run: ``python bench/listener.py [--duration-s 10] [--rounds 2] [--workers N] [--no-projection]
[--split] [--only bare,ours_sqlite,php] [--sustained [--sustained-s 60]]``.
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
import threading
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
    """Seconds after the load until the projection had caught up (the longest of the rounds)."""
    db_cpu_us: float = float("nan")
    """PostgreSQL: CPU per request of the database server's backends serving our listener."""


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


@dataclass
class Server:
    """A contestant up and ready: where to send, which processes to count, what to check afterwards."""

    name: str
    url: str
    path: str
    pid: int | None = None
    """Root of the process tree whose CPU counts (``None``: not ours to count, e.g. the PHP stack)."""
    engine: object = None
    """Our listener's database (a SQLAlchemy engine) when it has one: drain, backlog, stored count."""
    projection: bool = False
    pg_database: str = ""
    """Our PostgreSQL database's name: its backends' CPU is the database server's share."""
    check: object = None
    """Called with the results after the last round; raises if acknowledged requests were not stored."""


def _ours(
    name: str,
    db_url: str,
    workers: int,
    args: argparse.Namespace,
    tmp: Path,
    stack: contextlib.ExitStack,
    *,
    projection: bool,
    split: bool = False,
) -> Server:
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
    command = _uvicorn("contactsync.servers:listener_server_from_env", port, workers, factory=True)
    if split:  # handlers in their own process; the uvicorn workers only acknowledge
        stack.enter_context(_handlers_process(env, tmp / f"{name}-handlers.log"))
        env = {**env, "CONTACTSYNC_LISTENER_RUN_HANDLERS": "false"}
    engine = create_engine(db_url)
    stack.callback(engine.dispose)
    server = stack.enter_context(_process(command, env=env, log=tmp / f"{name}.log", port=port, what=name))

    def check(results: list[Result]) -> None:
        with engine.connect() as conn:
            stored = conn.execute(sa.select(sa.func.count()).select_from(tables.inbox)).scalar_one()
        sent = sum(r.requests - r.non_2xx for r in results)
        if stored < sent - args.connections * len(results):
            raise RuntimeError(f"{name}: {sent} requests acknowledged but only {stored} stored")

    return Server(
        name,
        f"http://127.0.0.1:{port}",
        f"/sync/{TOKEN}",
        None if split else server.pid,
        engine,
        projection,
        db_url.rsplit("/", 1)[1] if db_url.startswith("postgresql") else "",
        check,
    )


def _pending(engine: object) -> int:
    import sqlalchemy as sa

    from contactsync.db import listener as tables

    assert isinstance(engine, sa.Engine)
    query = sa.select(sa.func.count()).where(tables.handler_runs.c.state == "pending")
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _drain(engine: object, timeout_s: float = 300.0) -> float:
    """Seconds from the end of the load until no handler run is pending (the projection caught up)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s and _pending(engine):
        time.sleep(0.1)
    return time.monotonic() - started


def _backends_cpu_s(admin: object, database: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to ``database`` (same machine, /proc)."""
    rows = admin.execute(  # type: ignore[attr-defined]
        "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
    ).fetchall()
    return {pid: _tree_cpu_s(pid) for (pid,) in rows}


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


@contextlib.contextmanager
def _php(args: argparse.Namespace, tmp: Path) -> Iterator[Server]:
    import pymysql

    fpm = shutil.which("php-fpm8.2") or shutil.which("php-fpm")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if fpm is None:
        raise RuntimeError("php-fpm is not installed")
    db = "cs_bench_" + uuid.uuid4().hex[:10]
    admin = pymysql.connect(**MARIADB, autocommit=True)
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

    def check(results: list[Result]) -> None:
        with admin.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{db}`.contacts")
            (stored,) = cur.fetchone()
        if stored < sum(r.requests - r.non_2xx for r in results) - args.connections * len(results):
            raise RuntimeError(f"php: {sum(r.requests for r in results)} requests but only {stored} rows")

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
                yield Server("php", f"http://127.0.0.1:{port}", "/index.php", check=check)
        finally:
            fpm_process.terminate()
            fpm_process.wait(30)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        admin.close()


CONTESTANTS = ("bare", "ours_sqlite", "ours_sqlite_inbox", "ours_sqlite_split", "ours_pg", "php")
CPU_GOAL_ACK_US = 90.0
CPU_GOAL_PROJECTION_US = 130.0
VS_BARE_GOAL = {"ours_sqlite": 0.6, "ours_pg": 0.5}
VS_PHP_GOAL = 2.0


def _round(
    server: Server, args: argparse.Namespace, requests_file: Path, lua: Path, pg_admin: object
) -> Result:
    """One wrk run against ``server``; its CPU counted until the projection has caught up."""
    before_db = _backends_cpu_s(pg_admin, server.pg_database) if server.pg_database else {}
    before = _tree_cpu_s(server.pid) if server.pid else float("nan")
    result = _wrk(server.name, server.url, server.path, args, requests_file, lua)
    if server.projection and server.engine is not None:
        # handlers defer to acknowledgements: their share of the work is done after the load, and
        # counts; the next contestant starts on a quiet machine
        result.drain_s = _drain(server.engine)
    if server.pid:
        result.server_cpu_us = (_tree_cpu_s(server.pid) - before) / result.requests * 1e6
    if server.pg_database:
        after_db = _backends_cpu_s(pg_admin, server.pg_database)
        spent = sum(cpu - before_db.get(pid, 0.0) for pid, cpu in after_db.items())
        result.db_cpu_us = spent / result.requests * 1e6
    return result


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
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each server's best counts")
    parser.add_argument("--no-projection", action="store_true", help="inbox only, no SQL projection")
    parser.add_argument(
        "--split", action="store_true", help="also: SQLite with the handlers in their own process"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {', '.join(CONTESTANTS)} (default: all)"
    )
    parser.add_argument(
        "--sustained",
        action="store_true",
        help="then run ours_sqlite and ours_pg at a paced rate (a fraction of their peak) for --sustained-s",
    )
    parser.add_argument("--sustained-s", type=int, default=60)
    parser.add_argument("--sustained-fraction", type=float, default=0.7)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package wrk)")
    chosen = set(filter(None, args.only.split(",")))
    only = chosen or {name for name in CONTESTANTS if args.split or name != "ours_sqlite_split"}
    if args.no_projection:
        only.discard("ours_sqlite_inbox")
    with (
        tempfile.TemporaryDirectory(prefix="cs-bench-listener-") as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        requests_file, lua = tmp / "requests.tsv", tmp / "requests.lua"
        lua.write_text(LUA)
        servers = _start(args, only, tmp, stack)
        pg_admin = _pg_admin(stack) if any(s.pg_database for s in servers) else None
        runs: dict[str, list[Result]] = {s.name: [] for s in servers}
        for round_number in range(args.rounds):
            # distinct transactionids in every round (a repeat would only measure the duplicate path),
            # signed now (the listener accepts a signature for 5 minutes)
            _requests_file(requests_file, args.requests, first=round_number * args.requests)
            order = servers if round_number % 2 == 0 else servers[::-1]  # interleaved, both ways
            for server in order:
                runs[server.name].append(_round(server, args, requests_file, lua, pg_admin))
        for server in servers:
            if callable(server.check):
                server.check(runs[server.name])
            if sum(r.requests for r in runs[server.name]) > args.rounds * args.requests:
                raise RuntimeError(f"{server.name}: more requests than prepared; raise --requests")
        results = {name: max(found, key=lambda r: r.rps) for name, found in runs.items()}
        for name, found in runs.items():  # CPU per request: the best round too (the least disturbed)
            results[name].server_cpu_us = min((r.server_cpu_us for r in found), default=float("nan"))
            results[name].db_cpu_us = min((r.db_cpu_us for r in found), default=float("nan"))
            results[name].drain_s = max((r.drain_s for r in found), default=float("nan"))
        _report(args, results)
        if args.sustained:
            for server in servers:
                if server.name in ("ours_sqlite", "ours_pg") and server.name in results:
                    _sustained(server, results[server.name].rps, args, tmp, pg_admin)


def _start(args: argparse.Namespace, only: set[str], tmp: Path, stack: contextlib.ExitStack) -> list[Server]:
    """Every chosen contestant, started once and kept up for the interleaved rounds."""
    servers: list[Server] = []
    here = str(Path(__file__).resolve().parent)
    for workers in sorted({args.sqlite_workers, args.workers}) if "bare" in only else ():
        port = _free_port()
        name = f"bare_w{workers}"
        command = _uvicorn("listener:bare_app", port, workers, factory=True, app_dir=here)
        process = stack.enter_context(
            _process(command, env=dict(os.environ), log=tmp / f"{name}.log", port=port, what=name)
        )
        servers.append(Server(name, f"http://127.0.0.1:{port}", f"/sync/{TOKEN}", process.pid))
    projection = not args.no_projection
    sqlite_runs = {
        "ours_sqlite": {"projection": projection},
        "ours_sqlite_inbox": {"projection": False},  # the acknowledgement path alone
        "ours_sqlite_split": {"projection": True, "split": True},  # handlers in their own process
    }
    for number, (name, options) in enumerate(sqlite_runs.items()):
        if name in only:
            db_url = f"sqlite:///{tmp}/l{number}.db"
            servers.append(_ours(name, db_url, args.sqlite_workers, args, tmp, stack, **options))
    if "ours_pg" in only:
        pg_url = stack.enter_context(_pg_database())
        servers.append(_ours("ours_pg", pg_url, args.workers, args, tmp, stack, projection=projection))
    if "php" in only:
        servers.append(stack.enter_context(_php(args, tmp)))
    return servers


def _pg_admin(stack: contextlib.ExitStack) -> object:
    import psycopg

    admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    stack.callback(admin.close)
    return admin


def _goal(met: bool) -> str:
    return "met" if met else "NOT met"


def _report(args: argparse.Namespace, results: dict[str, Result]) -> None:
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration_s}s, best of {args.rounds} interleaved "
        f"rounds, php-fpm children={args.php_children} nginx workers={args.nginx_workers}, "
        f"projection={'off' if args.no_projection else 'on'}, listener workers: sqlite={args.sqlite_workers} "
        f"pg={args.workers}; load average {os.getloadavg()[0]:.2f}"
    )
    for r in results.values():
        drained = f"   projection caught up {r.drain_s:.1f} s after" if r.drain_s == r.drain_s else ""
        db = f"   database server CPU {r.db_cpu_us:4.0f} us/req" if r.db_cpu_us == r.db_cpu_us else ""
        print(
            f"  {r.name:<18} {r.rps:>9.0f} req/s   p50 {r.p50_ms:7.2f} ms   p99 {r.p99_ms:7.2f} ms   "
            f"server CPU {r.server_cpu_us:5.0f} us/req   wrk CPU {r.wrk_cpu_us:3.0f} us/req   "
            f"requests {r.requests}  non-2xx {r.non_2xx}  {r.errors}{drained}{db}"
        )
    print("goals (server CPU: the uvicorn process tree, handlers' catch-up after the load included):")
    for workers in sorted({args.sqlite_workers, args.workers}):
        if f"bare_w{workers}" in results:
            bare_cpu_us = results[f"bare_w{workers}"].server_cpu_us
            print(f"  server CPU per request, bare Starlette x{workers}: {bare_cpu_us:.0f} us (the baseline)")
    cpu_goals = (
        ("ours_sqlite_inbox", "ack path (inbox only, SQLite)", CPU_GOAL_ACK_US),
        ("ours_sqlite", "with projection, SQLite", CPU_GOAL_PROJECTION_US),
        ("ours_pg", f"with projection, PostgreSQL x{args.workers}", CPU_GOAL_PROJECTION_US),
    )
    for name, what, goal in cpu_goals:
        if name in results:
            r = results[name]
            if name == "ours_pg" and args.no_projection:
                what = f"inbox only, PostgreSQL x{args.workers}"
            extra = f" (+ database server {r.db_cpu_us:.0f} us)" if r.db_cpu_us == r.db_cpu_us else ""
            print(
                f"  server CPU per request, {what}: {r.server_cpu_us:.0f} us{extra}, goal <= {goal:.0f} us: "
                f"{_goal(r.server_cpu_us <= goal)}"
            )
    php = results.get("php")
    ours = [(name, args.sqlite_workers) for name in ("ours_sqlite", "ours_sqlite_inbox", "ours_sqlite_split")]
    for name, workers in [*ours, ("ours_pg", args.workers)]:
        if name not in results:
            continue
        r = results[name]
        bare = results.get(f"bare_w{workers}")
        if bare is not None:
            ratio = r.rps / bare.rps
            floor = VS_BARE_GOAL.get(name)
            verdict = (
                f", goal >= {floor}: {_goal(ratio >= floor)}" if floor and not args.no_projection else ""
            )
            print(f"  {name}_vs_bare={ratio:.2f}  (bare x{workers}: {bare.rps:.0f} req/s){verdict}")
        if php is not None:
            ratio = r.rps / php.rps
            print(f"  {name}_vs_php={ratio:.2f}  goal >= {VS_PHP_GOAL}: {_goal(ratio >= VS_PHP_GOAL)}")
            print(
                f"  {name}_p99_ms={r.p99_ms:.2f} vs php {php.p99_ms:.2f}  goal <= php's: "
                f"{_goal(r.p99_ms <= php.p99_ms)}"
            )
        else:
            print(f"  {name}_p99_ms={r.p99_ms:.2f}")


PACED_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } cs_timeval;
int gettimeofday(cs_timeval *tv, void *tz);
]]
local tv = ffi.new("cs_timeval")
local function now_ms()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
end
local start, slot, interval_ms = nil, 0, nil
function delay()
  -- this thread's requests go out on a fixed schedule (rate / threads per second), whichever
  -- connection is free: an open-loop pace while the server keeps up, back-to-back when it does not
  if interval_ms == nil then interval_ms = 1000 * nthreads / rate end
  local now = now_ms()
  if start == nil then start = now end
  slot = slot + 1
  local wait = start + slot * interval_ms - now
  if wait < 0 then return 0 end
  return wait
end
"""


def _sustained(
    server: Server, peak_rps: float, args: argparse.Namespace, tmp: Path, pg_admin: object
) -> None:
    """``--sustained-s`` at ``--sustained-fraction`` of the peak: latency, and whether the backlog grew.

    Paced by wrk itself (a LuaJIT ``delay()`` giving each request a slot on a fixed schedule; wrk2 is
    not installed here). Latency is counted from each request's actual send: a server that falls
    behind gets requests back to back, which shows as the achieved rate falling short of the target.
    The backlog (pending handler runs and the age of the oldest: the projection's lag behind the
    inbox) is sampled from the database every second.
    """
    rate = peak_rps * args.sustained_fraction
    count = int(rate * args.sustained_s * 1.1) + args.connections
    requests_file, lua = tmp / "sustained.tsv", tmp / "paced.lua"
    _requests_file(requests_file, count, first=(args.rounds + 1) * args.requests)
    lua.write_text(
        LUA.replace(
            "local file, nthreads, path = args[1], tonumber(args[2]), args[3]",
            "local file, path = args[1], args[3]\n  nthreads, rate = tonumber(args[2]), tonumber(args[4])",
        )
        + PACED_LUA
    )
    samples: list[tuple[float, int, float]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.wait(1.0):
            pending, lag_s = _backlog(server.engine)
            samples.append((time.monotonic() - started, pending, lag_s))

    sampler = threading.Thread(target=sample, daemon=True)
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.sustained_s}s", "--latency"]
    command += [
        "-s",
        str(lua),
        server.url,
        "--",
        str(requests_file),
        str(args.threads),
        server.path,
        f"{rate}",
    ]
    before = _tree_cpu_s(server.pid) if server.pid else float("nan")
    sampler.start()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    stop.set()
    sampler.join()
    drain_s = _drain(server.engine) if server.projection else 0.0
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    achieved = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)\.?0*%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    cpu_us = (_tree_cpu_s(server.pid) - before) / total * 1e6 if server.pid else float("nan")
    quarter = max(len(samples) // 4, 1)
    early = max((lag for _, _, lag in samples[:quarter]), default=0.0)
    late = max((lag for _, _, lag in samples[-quarter:]), default=0.0)
    grew = late > early + 1.0  # the lag rose by more than a second of traffic over the run
    print(
        f"sustained {server.name}: {args.sustained_s} s at {args.sustained_fraction:.0%} "
        f"of {peak_rps:.0f} req/s "
        f"= {rate:.0f} req/s target, {achieved:.0f} req/s achieved; p50 {lat.get('50', float('nan')):.2f} ms "
        f"p99 {lat.get('99', float('nan')):.2f} ms; non-2xx {int(non_2xx.group(1)) if non_2xx else 0}; "
        f"server CPU {cpu_us:.0f} us/req (catch-up included)"
    )
    shown = ", ".join(f"{t:.0f}s:{p}/{lag:.1f}s" for t, p, lag in samples[:: max(len(samples) // 8, 1)])
    print(
        f"  projection backlog (pending runs/lag): {shown or 'none'}; max lag first quarter {early:.1f} s, "
        f"last quarter {late:.1f} s -> lag grew: {'YES' if grew else 'no'}; caught up {drain_s:.1f} s after"
    )
    if not server.projection:
        print(
            "  (no projection: the inbox is written before each acknowledgement, so its backlog is latency)"
        )


def _backlog(engine: object) -> tuple[int, float]:
    """Pending handler runs and the age of the oldest in seconds (the projection's lag)."""
    import sqlalchemy as sa

    from contactsync.db import listener as tables

    assert isinstance(engine, sa.Engine)
    runs = tables.handler_runs
    query = sa.select(sa.func.count(), sa.func.min(runs.c.received_at_ms)).where(runs.c.state == "pending")
    with engine.connect() as conn:
        pending, oldest = conn.execute(query).one()
    return int(pending), (time.time() * 1000 - oldest) / 1000 if oldest else 0.0


if __name__ == "__main__":
    main()
