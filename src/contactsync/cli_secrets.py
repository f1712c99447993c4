"""``contactsync secrets``: the key that seals customers' credentials at rest, and its rotation.

Rotation re-encrypts every value the key seals under a new key: the platform's, and the listener's
too when both databases read the same key. One transaction per database, committed together at the
end. With a key file the new key is first written beside it (``<file>.new``, read as a second key),
so a rotation interrupted at any point leaves every value readable; the file is replaced only after
the commits. Running
processes keep the key they started with: stop them for the rotation, or restart them right after.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import typer
from rich.console import Console

secrets_app = typer.Typer(
    help="Secrets at rest: the sealing key (AES-GCM) and its rotation.", no_args_is_help=True
)
if TYPE_CHECKING:
    from contactsync.db.sealing import Keyring
    from contactsync.settings import Settings

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
    listener: bool = typer.Option(
        False,
        "--listener",
        help="Rotate the key beside the listener's SQLite database instead of the platform's (a key "
        "from CONTACTSYNC_SECRETS_KEY or CONTACTSYNC_SECRETS_KEY_FILE seals both: either way, both rotate).",
    ),
) -> None:
    """Re-encrypt every secret the key seals under a new key: action secrets and header values
    (outbox included), and the listener's signing secrets wherever the same key seals them."""
    from contactsync.db import sealing
    from contactsync.settings import Settings

    settings = Settings()
    rotated_url = settings.listener_database_url if listener else settings.database_url
    old = sealing.keyring_from_settings(settings, database_url=rotated_url)
    fresh = new_key or sealing.generate_key()
    new = sealing.Keyring.of([fresh], source="--new-key")
    path = None if settings.secrets_key else sealing.key_file(settings, database_url=rotated_url)
    sides = _sealed_by(settings, listener=listener)
    if path is not None:
        sealing.write_key_file(sealing.rotation_file(path), [fresh])
    try:
        changed = _reseal_all(sides, old, new)
    except Exception:
        if path is None and len(sides) > 1:  # a commit may have landed under a key printed nowhere else
            err.print(
                f"the rotation stopped part way: set CONTACTSYNC_SECRETS_KEY={fresh},<the old key> (both "
                f"open values then) and run it again with --new-key {fresh}",
                highlight=False,
            )
        raise
    where = " and ".join(side for side, _ in sides)
    if path is not None:
        sealing.write_key_file(path, [fresh])
        sealing.rotation_file(path).unlink()
        err.print(f"re-encrypted {changed} rows ({where}); {path} now holds the new key", highlight=False)
        err.print("restart every process using this key", highlight=False)
        return
    err.print(f"re-encrypted {changed} rows ({where}) under the new key (printed on stdout)", highlight=False)
    err.print(
        "set CONTACTSYNC_SECRETS_KEY to it in every process and restart them; the old key opens nothing now",
        highlight=False,
    )
    typer.echo(fresh)


def _sealed_by(settings: Settings, *, listener: bool) -> list[tuple[str, str]]:
    """The databases whose values the rotated key seals, as (side, URL): the rotated side's, and the
    other side's too when both read one key (an environment key, or the same key file), if it exists."""
    from contactsync.db import sealing

    platform = ("platform", settings.database_url)
    listener_side = ("listener", settings.listener_database_url)
    shared = bool(settings.secrets_key) or sealing.key_file(settings) == sealing.key_file(
        settings, database_url=listener_side[1]
    )
    rotated, other = (listener_side, platform) if listener else (platform, listener_side)
    sides = [rotated]
    if shared and other[1] != rotated[1] and _exists(other[1]):
        sides.append(other)
    return sides


def _exists(url: str) -> bool:
    """Whether the database at ``url`` is there to reseal: a SQLite file is looked for (a missing one
    would otherwise be created empty); a server's database is assumed there, as configured."""
    from contactsync.db import sealing

    beside = sealing.default_key_file(url)  # None for servers and in-memory SQLite
    if beside is None:
        return not url.startswith("sqlite")
    return beside.with_name(beside.name.removesuffix(".key")).exists()


def _reseal_all(sides: list[tuple[str, str]], old: Keyring, new: Keyring) -> int:
    """Reseal every side in its own transaction, all open at once: a value none can open fails the
    rotation before anything commits. The commits come last, the platform's after the listener's: its
    audit row then records only a rotation that landed everywhere."""
    from contactsync.automation.runtime import utc_now
    from contactsync.db.engine import create_engine
    from contactsync.db.migrate import upgrade
    from contactsync.db.reseal import reseal, reseal_listener
    from contactsync.tenancy.audit import Actor, record

    changed = 0
    with contextlib.ExitStack() as stack:
        pending = []
        for side, url in sorted(sides, key=lambda s: s[0] != "listener"):
            engine = create_engine(url)
            stack.callback(engine.dispose)
            upgrade(engine, side=side)
            conn = stack.enter_context(engine.connect())
            transaction = conn.begin()
            if side == "listener":
                changed += reseal_listener(conn, read=old, write=new)
            else:
                rows = reseal(conn, read=old, write=new)
                changed += rows
                record(conn, Actor.cli(), "secrets.rotate_key", account_id=None, target_type="installation",
                       now=utc_now(), detail={"rows": rows, "sides": [s for s, _ in sides]})  # fmt: skip
            pending.append(transaction)
        for transaction in pending:
            transaction.commit()
    return changed


def register(app: typer.Typer) -> None:
    app.add_typer(secrets_app, name="secrets")
