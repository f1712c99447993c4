"""Operator commands of the ``contactsync`` CLI: ``demo``, ``import``, ``automations run``,
``deliveries retry|recover`` and ``db upgrade``.

Conventions shared with the rest of the CLI: settings come from ``CONTACTSYNC_*`` variables, long
work shows a Rich progress bar on stderr, errors print as one ``error: …`` line on stderr with exit
code 1 (usage errors exit 2), and stdout carries only the result, so scripts can parse it. A command
that changes data writes one audit row (actor ``cli:<os user>``) in the transaction of its change,
or of its first chunk when it commits in chunks.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from contactsync.errors import ConfigError, ContactSyncError, StorageError

automations_app = typer.Typer(help="Automations: run one over its whole list.", no_args_is_help=True)
deliveries_app = typer.Typer(
    help="Deliveries: retry some, or recover an action's failures.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema: migrate the platform and listener schemas.", no_args_is_help=True)

out = Console()
err = Console(stderr=True)
RETRY_CHUNK = 500


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; raise the returned Exit(1)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(1)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn the package's own errors into one stderr line and exit code 1 (never a traceback)."""
    try:
        yield
    except ContactSyncError as exc:
        raise fail(str(exc)) from None


def bar(description: str) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,  # scripts and logs get the result only
    )


@contextmanager
def _platform() -> Iterator[tuple[Any, Any, Any]]:
    """Settings, an engine and a runtime; the engine is disposed however the command ends."""
    from contactsync.automation.runtime import Runtime
    from contactsync.settings import Settings

    settings = Settings()
    engine = _migrated(settings.database_url)
    try:
        yield settings, engine, Runtime.create(settings, engine=engine)
    finally:
        engine.dispose()


def _migrated(url: str) -> Any:
    """An engine over the platform database, or one ``error:`` line naming it and the command that
    creates it (a missing SQLite file is not created empty by asking)."""
    from contactsync.cli import describe_database
    from contactsync.db.engine import create_engine, embedded_file
    from contactsync.db.migrate import pending

    where = describe_database(url).removesuffix(" (not created yet)")
    fix = "create it with `contactsync db upgrade` (CONTACTSYNC_DATABASE_URL names it)"
    file = embedded_file(url)
    if file and file != ":memory:" and not Path(file).exists():
        raise ConfigError(f"the platform database {where} does not exist: {fix}")
    engine = create_engine(url)
    try:
        problem = pending(engine, side="platform")
    except ContactSyncError as exc:
        engine.dispose()
        raise StorageError(f"{exc} ({where})") from exc
    if problem is not None:
        engine.dispose()
        raise ConfigError(f"the platform database {where} {problem}: {fix.replace('create', 'migrate')}")
    return engine


# --- db ------------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    side: str = typer.Option("both", "--side", help="platform, listener or both."),
    revision: str = typer.Option("head", "--revision", help="Alembic revision to reach."),
) -> None:
    """Migrate the schema(s) at CONTACTSYNC_DATABASE_URL / CONTACTSYNC_LISTENER_DATABASE_URL."""
    from contactsync.db.migrate import upgrade
    from contactsync.settings import Settings

    settings = Settings()
    sides = {"platform": settings.database_url, "listener": settings.listener_database_url}
    if side not in (*sides, "both"):
        raise typer.BadParameter("expected platform, listener or both", param_hint="--side")
    with one_line_errors():
        for name, url in sides.items():
            if side in (name, "both"):
                upgrade(url, side=name, revision=revision)
                out.print(f"{name}: at {revision}", highlight=False)


# --- import --------------------------------------------------------------------------------------


def by_field_ids(rows: list[Any], defs: list[Any]) -> list[Any]:
    """The rows with each column named by a field's name (``First name``) renamed to the field's id,
    so a spreadsheet's header works as well as the shortcode keys (``FIRST_NAME``)."""
    from contactsync.automation.import_columns import rename_headers

    renamed = rename_headers({name for row in rows for name in row.fields}, defs)
    if not renamed:
        return rows
    return [
        row.model_copy(update={"fields": {renamed.get(k, k): v for k, v in row.fields.items()}})
        for row in rows
    ]


def import_command(
    file: Annotated[Path, typer.Argument(help="CSV (header row, email column) or NDJSON file; - for stdin.")],
    list_id: int = typer.Option(..., "--list", "-l", help="Id of the list the contacts go into."),
    fmt: str = typer.Option("auto", "--format", "-f", help="csv, ndjson or auto (by file extension)."),
) -> None:
    """Upsert contacts from a file, all rows or none; automations fire as for API imports."""
    import sys

    from contactsync.automation import imports
    from contactsync.automation.events import save_contact
    from contactsync.automation.lists import account_of_list, list_fields
    from contactsync.tenancy.audit import Actor, record

    kind = fmt if fmt != "auto" else ("ndjson" if file.suffix.lower() in {".ndjson", ".jsonl"} else "csv")
    if kind not in {"csv", "ndjson"}:
        raise typer.BadParameter("expected csv, ndjson or auto", param_hint="--format")
    try:
        body = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None
    content_type = "text/csv" if kind == "csv" else "application/x-ndjson"
    with one_line_errors():
        rows = imports.parse(body, content_type)
        with _platform() as (_settings, engine, rt):
            counts = {"created": 0, "updated": 0, "unchanged": 0, "deliveries": 0}
            with bar("importing") as progress, engine.begin() as conn:
                account_id = account_of_list(conn, list_id)
                rows = by_field_ids(rows, list_fields(conn, list_id))
                task = progress.add_task("importing", total=len(rows))
                for i, row in enumerate(rows):
                    try:
                        saved, fired = save_contact(conn, rt, row.to_input(list_id))
                    except ContactSyncError as exc:
                        raise type(exc)(f"row {i + 1}: {exc}") from exc
                    key = "created" if saved.created else "updated" if saved.changed else "unchanged"
                    counts[key] += 1
                    counts["deliveries"] += len(fired.transactionids)
                    progress.advance(task)
                record(conn, Actor.cli(), "contact.import", account_id=account_id, target_type="list",
                       target_id=list_id, now=rt.clock(), detail={"rows": len(rows), **counts})  # fmt: skip
    out.print_json(json.dumps({"rows": len(rows), **counts}))


# --- automations ---------------------------------------------------------------------------------


@automations_app.command("run")
def automations_run(
    automation_id: int = typer.Argument(..., help="Automation id."),
    chunk_size: int | None = typer.Option(
        None,
        "--chunk-size",
        min=1,
        help="Contacts per committed chunk (default: 2,000 on SQLite, 20,000 on PostgreSQL).",
    ),
    ignore_reentry: bool = typer.Option(
        False,
        "--ignore-reentry",
        help="Resend on purpose: every contact that matches enters, even one a `once` automation let in "
        "before (asks for confirmation with the count unless --yes).",
    ),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before a resend."),
) -> None:
    """Run a manual pass over every contact of the automation's list (resumes an unfinished run)."""
    from contactsync.automation.actions import account_of_automation
    from contactsync.automation.manual import get_run, run_to_completion, start_run
    from contactsync.errors import RunInProgressError
    from contactsync.tenancy.audit import Actor, record

    with one_line_errors(), _platform() as (_settings, engine, rt):
        if ignore_reentry and not yes:
            from contactsync.automation.explain import dry_run

            with engine.connect() as conn:
                preview = dry_run(conn, rt, automation_id, ignore_reentry=True)
            typer.confirm(
                f"resend to the {preview.would_enter} of {preview.total} contacts that match now "
                f"(re-entry ignored)?",
                abort=True,
                err=True,
            )
        with engine.begin() as conn:  # the run's chunks commit apart: its start is the audited change
            try:
                started = start_run(conn, rt, automation_id, ignore_reentry=ignore_reentry)
                resumed = False
            except RunInProgressError as exc:
                started, resumed = get_run(conn, exc.run_id), True
            action = "run.resend" if started.ignore_reentry else "run.start"
            record(conn, Actor.cli(), action, account_id=account_of_automation(conn, automation_id),
                   target_type="run", target_id=started.id, now=rt.clock(),
                   detail={"automation_id": automation_id, "resumed": resumed})  # fmt: skip
        with bar(f"automation {automation_id}") as progress:
            task = progress.add_task(
                f"automation {automation_id}", total=started.total, completed=started.scanned
            )

            def step(run: Any) -> None:
                progress.update(task, completed=run.scanned, total=max(run.total, run.scanned))

            done = run_to_completion(engine, rt, started.id, chunk_size=chunk_size, on_progress=step)
    out.print_json(done.model_dump_json())
    if done.state != "completed":
        raise typer.Exit(1)


# --- deliveries ----------------------------------------------------------------------------------


def _replay_in_chunks(
    engine: Any, ids: list[int], label: str, audit: Callable[[sa.Connection, datetime], None]
) -> int:
    """Replay ``ids`` a chunk per transaction (progress, short transactions on large backlogs).

    ``audit`` writes the command's audit row in the first chunk's transaction: nothing is committed
    before the log names it, as a manual run's start names the chunks that follow.
    """
    from contactsync.automation.runtime import utc_now
    from contactsync.delivery import interventions

    moved = 0
    with bar(label) as progress:
        task = progress.add_task(label, total=len(ids))
        for start in range(0, max(len(ids), 1), RETRY_CHUNK):
            part = ids[start : start + RETRY_CHUNK]
            with engine.begin() as conn:
                now = utc_now()
                if start == 0:
                    audit(conn, now)
                moved += interventions.replay(conn, part, now=now)
            progress.advance(task, len(part))
    return moved


def _by_account(conn: sa.Connection, ids: list[int]) -> dict[int, list[int]]:
    """The existing deliveries among ``ids``, by account."""
    from contactsync.db.platform import deliveries

    d = deliveries.c
    found: dict[int, list[int]] = {}
    for start in range(0, len(ids), RETRY_CHUNK):
        part = ids[start : start + RETRY_CHUNK]
        for delivery_id, account_id in conn.execute(sa.select(d.id, d.account_id).where(d.id.in_(part))):
            found.setdefault(account_id, []).append(delivery_id)
    return {account: sorted(named) for account, named in found.items()}


AUDITED_IDS = 100
"""At most this many delivery ids are named in an audit row (with the count of all of them)."""


@deliveries_app.command("retry")
def deliveries_retry(
    ids: Annotated[list[int], typer.Argument(help="Delivery ids (failed, cancelled or delivered).")],
) -> None:
    """Send deliveries again now, with a fresh retry schedule (same transactionid and body)."""
    from contactsync.tenancy.audit import Actor, record

    wanted = sorted(set(ids))
    with one_line_errors(), _platform() as (_settings, engine, _rt):
        with engine.connect() as conn:
            by_account = _by_account(conn, wanted)

        def audit(conn: sa.Connection, now: datetime) -> None:
            """One row per account whose deliveries are named (one, but for an operator's sweep)."""
            for account_id, named in sorted(by_account.items()):
                record(conn, Actor.cli(), "delivery.retry", account_id=account_id, target_type="delivery",
                       target_id=named[0] if len(named) == 1 else None, now=now,
                       detail={"ids": named[:AUDITED_IDS], "requested": len(named)})  # fmt: skip

        moved = _replay_in_chunks(engine, wanted, "retrying", audit)
    out.print_json(json.dumps({"requested": len(wanted), "queued": moved}))
    if moved < len(wanted):
        err.print("some deliveries were pending or in flight already, or do not exist", highlight=False)
        raise typer.Exit(1)


@deliveries_app.command("recover")
def deliveries_recover(
    since: Annotated[datetime, typer.Option("--since", help="Created at or after this UTC time (ISO 8601).")],
    action_id: int = typer.Option(..., "--action", "-a", help="Action whose failed deliveries to retry."),
) -> None:
    """Retry every failed delivery of one action created since a moment (delivery.md "recover")."""
    from contactsync.automation.actions import account_of_automation, get_action
    from contactsync.db.platform import deliveries
    from contactsync.tenancy.audit import Actor, record

    with one_line_errors(), _platform() as (_settings, engine, _rt):
        naive = since if since.tzinfo is None else since.astimezone(UTC).replace(tzinfo=None)
        d = deliveries.c
        with engine.connect() as conn:
            account_id = account_of_automation(conn, get_action(conn, action_id).automation_id)
            ids = list(
                conn.execute(
                    sa.select(d.id)
                    .where(d.action_id == action_id, d.state == "failed", d.created_at >= naive)
                    .order_by(d.id)
                ).scalars()
            )

        def audit(conn: sa.Connection, now: datetime) -> None:
            detail = {"failed": len(ids), "since": str(naive)}
            record(conn, Actor.cli(), "action.recover", account_id=account_id, target_type="action",
                   target_id=action_id, now=now, detail=detail)  # fmt: skip

        moved = _replay_in_chunks(engine, ids, f"recovering action {action_id}", audit)
    out.print_json(json.dumps({"failed": len(ids), "queued": moved}))


# --- demo ----------------------------------------------------------------------------------------


def demo_command(
    duration: float | None = typer.Option(
        None, "--duration", min=1, help="Stop after S seconds (default: Ctrl-C)."
    ),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open the admin UI in a browser."),
    workdir: Annotated[
        Path | None, typer.Option("--dir", help="Working directory (default: a new temporary one).")
    ] = None,
    contacts: int = typer.Option(1000, "--contacts", min=1, max=100_000, help="Contacts to generate."),
    rate: float = typer.Option(10.0, "--rate", min=0.1, max=1000, help="Activity events per second."),
    port: int = typer.Option(8000, "--port", help="Platform port (another free one if taken)."),
    listener_port: int = typer.Option(
        8001, "--listener-port", help="Listener port (another free one if taken)."
    ),
    check_only: bool = typer.Option(
        False, "--check", help="Only check an earlier demo's --dir again: deliveries and projected contents."
    ),
) -> None:
    """Platform + dispatcher + listener in one process on SQLite, with live deliveries; no set-up needed."""
    import asyncio
    import logging
    import webbrowser

    from contactsync.demo.config import DemoConfig
    from contactsync.demo.report import Progress, check
    from contactsync.demo.run import run

    if check_only:
        if workdir is None:
            raise fail("--check needs the --dir of an earlier demo")
        with one_line_errors():
            _demo_verdict(check(workdir), workdir)

    logging.basicConfig(level=logging.ERROR)
    where = workdir or Path(tempfile.mkdtemp(prefix="contactsync-demo-"))
    if workdir is not None and any(workdir.glob("*.db")):
        raise fail(f"{workdir} already holds a demo database; pass an empty --dir")
    config = DemoConfig(
        workdir=where,
        duration_s=duration,
        contacts=contacts,
        events_per_s=rate,
        platform_port=port,
        listener_port=listener_port,
    )
    out.print(f"Seeding {contacts} contacts with activity in [bold]{where}[/] …", highlight=False)

    def show(settings: Any, listener_url: str) -> None:
        base = settings.public_base_url
        lbase = listener_url.split("/sync/", 1)[0]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")  # a URL folds onto the next line, never cut short with "…"
        grid.add_row("Platform admin UI", f"{base}/login")
        grid.add_row("Operator email", f"[bold]{escape(settings.admin_email)}[/]")
        grid.add_row("Operator password", f"[bold]{escape(settings.admin_password)}[/]")
        grid.add_row("Platform API docs", f"{base}/api/docs")
        grid.add_row("Listener admin UI", f"{lbase}/admin/login (same password, no email)")
        grid.add_row("Listener private URL", listener_url)
        grid.add_row("Data", str(where))
        stop = f"for {duration:g} s" if duration else "until Ctrl-C"
        out.print(Panel(grid, title="contactsync demo", subtitle=f"running {stop}"))

    def render(state: Progress, phase: str) -> Any:
        table = Table(title=f"live · {phase}", show_header=True, header_style="bold")
        for name in (
            "events",
            "queued",
            "sending",
            "delivered",
            "failed",
            "received",
            "projected",
            "contacts",
        ):
            table.add_column(name, justify="right")
        s = state.states
        values = [state.events, s.get("pending", 0), s.get("in_flight", 0), s.get("delivered", 0)]
        values += [s.get("failed", 0), state.received, state.projected_runs, state.projected_contacts]
        table.add_row(*(str(v) for v in values))
        return Group(table)

    def ready(url: str) -> None:
        if not no_browser:
            webbrowser.open(url)

    live = Live(render(Progress(), "starting"), console=out, refresh_per_second=4, transient=False)
    with one_line_errors():
        try:
            report = asyncio.run(run(config, show=show, render=render, live=live, on_ready=ready))
        except OSError as exc:
            raise fail(str(exc)) from None
    out.print()
    _demo_verdict(report, where)


def _demo_verdict(report: Any, where: Path) -> None:
    """Print the demo's final report and exit 0 (all delivered, projected and equal) or 1."""
    verdict = "[bold green]OK[/]" if report.ok else "[bold red]INCOMPLETE[/]"
    out.print(
        f"{verdict} {report.events} events → {report.generated} deliveries generated, "
        f"{report.delivered} delivered, {report.failed} failed, {report.projected} projected by the listener "
        f"in {report.elapsed_s:.1f} s",
        highlight=False,
    )
    if report.missing:
        out.print(f"not projected (first 20): {report.missing}", highlight=False)
    if report.differences:
        out.print("[bold red]the listener's data differs from the platform's[/] (first 20):")
        for line in report.differences:
            out.print(f"  {line}", highlight=False)
    else:
        out.print("every contact's projection equals the platform's data", highlight=False)
    out.print(f"demo data kept in {where}", highlight=False)
    raise typer.Exit(0 if report.ok else 1)


def register(app: typer.Typer) -> None:
    """Add the operator commands to the root ``contactsync`` app."""
    app.command("demo")(demo_command)
    app.command("import")(import_command)
    app.add_typer(automations_app, name="automations")
    app.add_typer(deliveries_app, name="deliveries")
    app.add_typer(db_app, name="db")
