"""``contactsync secrets``: the key that seals customers' credentials at rest, and its rotation.

Rotation re-encrypts every sealed value under a new key in one transaction. With a key file the new
key is first written beside it (``<file>.new``, read as a second key), so a rotation interrupted at
any point leaves every value readable; the file is replaced only after the commit. Running
processes keep the key they started with: stop them for the rotation, or restart them right after.
"""

from __future__ import annotations

import typer
from rich.console import Console

secrets_app = typer.Typer(
    help="Secrets at rest: the sealing key (AES-GCM) and its rotation.", no_args_is_help=True
)
err = Console(stderr=True)


@secrets_app.command("generate-key")
def generate_key_command() -> None:
    """Print a new random key (for CONTACTSYNC_SECRETS_KEY or a key file)."""
    from contactsync.db.sealing import generate_key

    typer.echo(generate_key())


@secrets_app.command("rotate-key")
def rotate_key_command(
    new_key: str | None = typer.Option(
        None, "--new-key", help="The key to rotate to (default: a new random one).", show_default=False
    ),
) -> None:
    """Re-encrypt every action secret and header value (outbox included) under a new key."""
    from contactsync.automation.runtime import utc_now
    from contactsync.db import sealing
    from contactsync.db.engine import create_engine
    from contactsync.db.migrate import upgrade
    from contactsync.db.reseal import reseal
    from contactsync.settings import Settings
    from contactsync.tenancy.audit import Actor, record

    settings = Settings()
    old = sealing.keyring_from_settings(settings)
    fresh = new_key or sealing.generate_key()
    new = sealing.Keyring.of([fresh], source="--new-key")
    path = None if settings.secrets_key else sealing.key_file(settings)
    if path is not None:
        sealing.write_key_file(sealing.rotation_file(path), [fresh])
    engine = create_engine(settings.database_url)
    try:
        upgrade(engine, side="platform")
        with engine.begin() as conn:
            changed = reseal(conn, read=old, write=new)
            record(conn, Actor.cli(), "secrets.rotate_key", account_id=None, target_type="installation",
                   now=utc_now(), detail={"rows": changed, "key_file": path is not None})  # fmt: skip
    finally:
        engine.dispose()
    if path is not None:
        sealing.write_key_file(path, [fresh])
        sealing.rotation_file(path).unlink()
        err.print(f"re-encrypted {changed} rows; {path} now holds the new key", highlight=False)
        err.print("restart every process using this database", highlight=False)
        return
    err.print(f"re-encrypted {changed} rows under the new key (printed on stdout)", highlight=False)
    err.print(
        "set CONTACTSYNC_SECRETS_KEY to it in every process and restart them; the old key opens nothing now",
        highlight=False,
    )
    typer.echo(fresh)


def register(app: typer.Typer) -> None:
    app.add_typer(secrets_app, name="secrets")
