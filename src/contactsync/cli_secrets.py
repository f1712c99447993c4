"""``contactsync secrets``: the key that seals customers' credentials at rest, and its rotation.

Rotation re-encrypts every value the key seals under a new key: the platform's, and the listener's
too when both databases read the same key. One transaction per database: all re-sealed before any
commits, the listener's first. With a key file the new key is first written beside it (``<file>.new``,
read as a second key), so a rotation interrupted at any point leaves every value readable, and the next
run finishes it with that key; the file is replaced only after the commits. With an environment key the
new one is printed before anything commits. Running processes keep the key they started with: stop
them for the rotation, or restart them right after.
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
        help="Rotate the listener's key (by default the file beside its SQLite database) instead of the "
        "platform's. A key both read (CONTACTSYNC_SECRETS_KEY, or one key file) re-seals both databases "
        "when both are configured here.",
    ),
) -> None:
    """Re-encrypt every secret the key seals under a new key: action secrets and header values
    (outbox included), and the listener's signing secrets where this host's settings name its database
    and the same key seals it."""
    from contactsync.db import sealing
    from contactsync.errors import ConfigError
    from contactsync.settings import Settings

    settings = Settings()
    rotated_url = settings.listener_database_url if listener else settings.database_url
    if listener and not _exists(rotated_url):
        raise ConfigError(f"no listener database at {rotated_url}: nothing to rotate")
    path = None if settings.secrets_key else sealing.key_file(settings, database_url=rotated_url)
    fresh = new_key or sealing.generate_key()
    if path is not None and sealing.rotation_file(path).exists():
        # an earlier rotation stopped after a commit: its key may seal values already, finish with it
        pending = sealing.read_key_file(sealing.rotation_file(path))
        if pending and new_key not in (None, pending[0]):
            raise ConfigError(
                f"a rotation to another key is pending in {sealing.rotation_file(path)}: "
                "run rotate-key without --new-key to finish it first"
            )
        fresh = pending[0] if pending else fresh
    old = sealing.keyring_from_settings(settings, database_url=rotated_url)
    new = sealing.Keyring.of([fresh], source="--new-key")
    sides = _sealed_by(settings, listener=listener)
    if path is not None:
        sealing.write_key_file(sealing.rotation_file(path), [fresh])
    else:  # printed before anything commits: a run stopped between two commits leaves no value unreadable
        typer.echo(fresh)
    landed: list[str] = []
    try:
        changed = _reseal_all(sides, old, new, landed)
    except BaseException:
        if landed and path is None:
            err.print(
                f"the rotation stopped after re-sealing {' and '.join(landed)}: set CONTACTSYNC_SECRETS_KEY "
                "to the key printed on stdout, a comma, then the old key (both open values), and run "
                "rotate-key again with --new-key <that key>",
                highlight=False,
            )
        elif landed and path is not None:
            err.print(f"the rotation stopped part way: {path} and {sealing.rotation_file(path)} open every "
                      "value; run rotate-key again to finish it", highlight=False)  # fmt: skip
        raise
    resealed = sorted(landed, key=lambda side: side != "platform")  # the committed ones, platform first
    where = " and ".join(resealed) + (" databases" if len(resealed) > 1 else " database")
    err.print(f"re-encrypted {changed} rows in {where}", highlight=False)
    if path is not None:
        sealing.write_key_file(path, [fresh])
        sealing.rotation_file(path).unlink()
        err.print(f"{path} now holds the new key: copy it to every host that reads it, restart every "
                  "process using it", highlight=False)  # fmt: skip
        return
    err.print(
        "set CONTACTSYNC_SECRETS_KEY to the new key (printed on stdout) in every process and restart them. "
        "A database this host's settings do not name (a listener elsewhere) is still sealed by the old key: "
        "there, set CONTACTSYNC_SECRETS_KEY=<new>,<old> and run rotate-key --listener --new-key <new>",
        highlight=False,
    )


def _sealed_by(settings: Settings, *, listener: bool) -> list[tuple[str, str]]:
    """The databases whose values the rotated key seals, as (side, URL): the rotated side's, and the
    other side's too when both read one key (an environment key, or the same key file), if it exists."""
    from contactsync.db import sealing

    platform = ("platform", settings.database_url)
    listener_side = ("listener", settings.listener_database_url)
    platform_file = sealing.key_file(settings)
    shared = bool(settings.secrets_key) or (
        platform_file is not None
        and platform_file == sealing.key_file(settings, database_url=listener_side[1])
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

    path = sealing.sqlite_file(url)  # None for servers and in-memory SQLite
    if path is None:
        return not url.startswith("sqlite")
    return path.exists()


def _reseal_all(sides: list[tuple[str, str]], old: Keyring, new: Keyring, landed: list[str]) -> int:
    """Reseal every side in its own transaction, all open at once: a value none can open fails the
    rotation before anything commits. The commits come last, the platform's after the listener's: its
    audit row then records only a rotation that landed everywhere. ``landed``: the sides committed.

    The rotated side's schema is brought up to date, as any command does; the other side's is not (its
    processes may run another release): a database without the listener's secrets table is skipped."""
    import sqlalchemy as sa

    from contactsync.automation.runtime import utc_now
    from contactsync.db.engine import create_engine
    from contactsync.db.listener import secrets as listener_secrets
    from contactsync.db.migrate import upgrade
    from contactsync.db.reseal import reseal, reseal_listener
    from contactsync.tenancy.audit import Actor, record

    changed = 0
    with contextlib.ExitStack() as stack:
        pending = []
        for index, (side, url) in enumerate(sides):
            engine = create_engine(url)
            stack.callback(engine.dispose)
            if index == 0:
                upgrade(engine, side=side)
            conn = stack.enter_context(engine.connect())
            transaction = conn.begin()
            if side == "listener" and not sa.inspect(conn).has_table(listener_secrets.name):
                transaction.rollback()
                continue
            if side == "listener":
                changed += reseal_listener(conn, read=old, write=new)
            else:
                rows = reseal(conn, read=old, write=new)
                changed += rows
                record(conn, Actor.cli(), "secrets.rotate_key", account_id=None, target_type="installation",
                       now=utc_now(), detail={"rows": rows, "sides": [s for s, _ in sides]})  # fmt: skip
            pending.append((side, transaction))
        for side, transaction in sorted(pending, key=lambda p: p[0] == "platform"):
            transaction.commit()
            landed.append(side)
    return changed


def register(app: typer.Typer) -> None:
    app.add_typer(secrets_app, name="secrets")
