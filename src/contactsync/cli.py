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


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def main() -> None:
    """Entry point of the ``contactsync`` script."""
    try:
        app()
    except ContactSyncError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        sys.exit(1)
