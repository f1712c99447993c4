"""The ``contactsync`` command line: one Typer app, one group per concept.

Errors the package raises on purpose print as one line on stderr with exit code 1; usage
errors exit 2 (Typer's convention), so scripts can trust the exit code.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from contactsync import __version__
from contactsync.errors import ContactSyncError

app = typer.Typer(
    name="contactsync",
    help="Both ends of the 'Sync Contact to Third Party' action: platform, dispatcher and listener.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
wire_app = typer.Typer(help="Inspect the wire contract: what a PHP listener sees.", no_args_is_help=True)
app.add_typer(wire_app, name="wire")

err_console = Console(stderr=True)


USES_DATABASE = {
    **dict.fromkeys(
        ("serve", "worker", "keys", "import", "automations", "deliveries", "accounts", "users", "secrets"),
        ("platform",),
    ),
    "db": ("platform", "listener"),
    "listen": ("listener",),
}
"""Which database each command works on: named on stderr before it starts, so a command run from
another directory (a relative SQLite path) cannot quietly use another file than the server."""


def describe_database(url: str) -> str:
    """``url`` as a person checks it: a SQLite file's absolute path (and whether it exists yet), any
    other URL without its password."""
    from pathlib import Path

    import sqlalchemy as sa

    from contactsync.db.engine import embedded_file

    file = embedded_file(url)
    if file is None:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    if not file or file == ":memory:":
        return "SQLite in memory"
    path = Path(file).resolve()
    return f"{path}" + ("" if path.exists() else " (not created yet)")


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()
    sides = USES_DATABASE.get(ctx.invoked_subcommand or "", ())
    if not sides or {"--help", "-h"} & set(sys.argv):
        return
    from contactsync.settings import Settings

    try:
        settings = Settings()
        urls = {"platform": settings.database_url, "listener": settings.listener_database_url}
        for side in sides:
            typer.echo(f"{side} database: {describe_database(urls[side])}", err=True)
    except Exception:
        return


@app.command("render")
def render_command(
    template: str = typer.Option(..., "--template", "-t", help="URL template with [#…#] shortcodes."),
    contact: str | None = typer.Option(
        None, "--contact", "-c", help="Contact as a JSON object of field → value: a file, or - for stdin."
    ),
    fields: str | None = typer.Option(
        None, "--fields", help="Comma-separated field keys of the list; unknown fields become errors."
    ),
    now: str | None = typer.Option(None, "--now", help="Render time, ISO 8601 (default: now, UTC)."),
    country_code: str | None = typer.Option(
        None, "--country-code", help="Default phone country code (default: CONTACTSYNC_DEFAULT_COUNTRY_CODE)."
    ),
) -> None:
    """Render a URL template for one contact; on a mistake print it with a caret under the spot."""
    import json
    import re
    from datetime import datetime
    from pathlib import Path

    from contactsync.errors import TemplateError
    from contactsync.settings import Settings
    from contactsync.shortcodes import compile as compile_template
    from contactsync.shortcodes import shortcode_key

    def fail(message: str) -> typer.Exit:
        typer.echo(f"error: {message}", err=True)
        return typer.Exit(1)

    values: dict[str, object] = {}
    if contact is not None:
        try:
            raw = sys.stdin.read() if contact == "-" else Path(contact).read_text(encoding="utf-8")
            loaded = json.loads(raw) if raw.strip() else {}
        except (OSError, ValueError) as exc:
            raise fail(f"cannot read the contact JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise fail("the contact must be a JSON object of field → value")
        for key, value in loaded.items():
            name = str(key).strip().upper()
            values[name if re.fullmatch(r"[A-Z][A-Z0-9_-]*", name) else shortcode_key(str(key))] = value
    at = None
    if now is not None:
        try:
            at = datetime.fromisoformat(now)
        except ValueError:
            raise fail(f"--now is not an ISO 8601 date-time: {now!r}") from None
    keys = None if fields is None else [f.strip() for f in fields.split(",") if f.strip()]
    cc = country_code if country_code is not None else Settings().default_country_code
    try:
        compiled = compile_template(template, keys, default_country_code=cc)
    except TemplateError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        typer.echo(exc.caret(), err=True)
        raise typer.Exit(1) from None
    except ContactSyncError as exc:
        raise fail(str(exc)) from None
    url = compiled.render(values, now=at)
    typer.echo(url)
    for warning in compiled.warnings(url):
        typer.echo(f"warning: {warning}", err=True)


@app.command("worker")
def worker_command(
    processes: int = typer.Option(
        1, "--processes", "-p", help="Dispatcher processes (PostgreSQL only for >1)."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Serve Prometheus /metrics on 127.0.0.1:PORT (PORT+i for process i)."
    ),
) -> None:
    """Run the delivery dispatcher(s) until SIGTERM; in-flight work is finished or released."""
    import logging

    from contactsync.automation import send_time
    from contactsync.automation.sync_activity import worker_job
    from contactsync.delivery import worker
    from contactsync.settings import Settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    jobs = (worker_job,)  # delivered syncs become webhook activity (beside the first dispatcher)
    run = worker.run(
        Settings(), processes=processes, metrics_port=metrics_port, renderer=send_time.for_settings, jobs=jobs
    )
    raise typer.Exit(run)


@app.command("listen")
def listen_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="TCP port to listen on."),
    token_file: str = typer.Option(
        ".contactsync-listener-token", "--token-file", help="Where a generated token is kept."
    ),
    handlers_only: bool = typer.Option(
        False, "--handlers-only", help="Run only the handlers (beside LISTENER_RUN_HANDLERS=false listeners)."
    ),
) -> None:
    """Run the listener (SQLite inbox by default); prints its private URL."""
    from pathlib import Path

    from contactsync.listener import serve
    from contactsync.servers import listener_server
    from contactsync.settings import Settings

    if handlers_only:
        serve.handlers_main(Settings())
        return
    serve.run(Settings(), server=listener_server, host=host, port=port, token_file=Path(token_file))


def _warn_form_limits(body: str | bytes, *, post: bool) -> None:
    """One stderr line per PHP input limit under which a default PHP listener would lose data."""
    from contactsync.wire import phpform

    stats = phpform.measure(body, source="post" if post else "get")
    for limit in stats.exceeded(source="post" if post else "get"):
        if limit == "max_input_vars":
            kept = "1001 (POST)" if post else "1000 (GET)"
            detail = f"{stats.variables} variables; PHP keeps {kept}"
        else:
            detail = f"nesting depth {stats.max_nesting} > 64; PHP deletes such variables"
        typer.echo(f"warning: {limit}: {detail}", err=True)


@wire_app.command("decode")
def wire_decode_command(
    source: str = typer.Option("post", "--source", help="post ($_POST) or get ($_GET / parse_str)."),
    json_out: bool = typer.Option(
        False, "--json-out", help="One-line typed JSON: [key, value] pairs, int keys as numbers."
    ),
    print_r: bool = typer.Option(False, "--print-r", help="Also print PHP's print_r() of the result."),
) -> None:
    """Read a form body on stdin; print what PHP 8 puts in $_POST (or $_GET), as pretty JSON.

    A final newline on stdin is not part of the body. Bytes that are not UTF-8 show as \\udcXX.
    """
    import json
    import re

    from contactsync.wire import phpform

    if source not in ("post", "get"):
        raise typer.BadParameter("must be post or get", param_hint="--source")
    post = source == "post"
    body = sys.stdin.buffer.read().removesuffix(b"\n")  # the newline echo adds is not part of a body
    _warn_form_limits(body, post=post)
    decoded = phpform.decode(body, source="post" if post else "get")

    def pairs(value: object) -> object:
        if isinstance(value, dict):
            return [[key, pairs(item)] for key, item in value.items()]
        return value

    shown = pairs(decoded) if json_out else decoded
    text = json.dumps(shown, ensure_ascii=False, indent=None if json_out else 2)
    # bytes that are not UTF-8 (surrogateescape) are shown as JSON \udcXX escapes
    text = re.sub("[\udc80-\udcff]", lambda m: f"\\u{ord(m.group()):04x}", text)
    typer.echo(text)
    if print_r:
        sys.stdout.flush()
        sys.stdout.buffer.write(phpform.print_r(decoded).encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()


@wire_app.command("encode")
def wire_encode_command(
    rfc3986: bool = typer.Option(False, "--rfc3986", help="PHP_QUERY_RFC3986 (%20 for space, ~ kept)."),
) -> None:
    """Read JSON on stdin; print the form body PHP's http_build_query() makes of it."""
    import json

    from contactsync.wire import phpform

    try:
        data = json.loads(sys.stdin.read())
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"stdin is not JSON: {exc}") from None
    if not isinstance(data, dict | list):
        raise typer.BadParameter("stdin must hold a JSON object or array")
    body = phpform.encode(data, rfc3986=rfc3986)
    _warn_form_limits(body, post=True)
    typer.echo(body)


def _register_operator_commands() -> None:
    from contactsync.cli_ops import register

    register(app)


_register_operator_commands()


def _register_api_commands() -> None:
    from contactsync.api.commands import register as register_api

    register_api(app)


_register_api_commands()


def _register_secrets_commands() -> None:
    from contactsync.cli_secrets import register as register_secrets

    register_secrets(app)


_register_secrets_commands()


def _register_retention_commands() -> None:
    import contactsync.cli_retention  # noqa: F401  (adds `db prune` to the `db` group)


_register_retention_commands()


def _register_people_commands() -> None:
    from contactsync.cli_people import register as register_people

    register_people(app)


_register_people_commands()


def main() -> None:
    """Entry point of the ``contactsync`` script."""
    try:
        app()
    except ContactSyncError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        sys.exit(1)
