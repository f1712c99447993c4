"""CLI commands of the platform API: ``serve`` and ``keys create|list|revoke``.

Settings come from ``CONTACTSYNC_*`` variables. ``keys create`` prints the new key alone on stdout
(so ``KEY=$(contactsync keys create --name ci)`` works) and says on stderr that it is shown once.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

keys_app = typer.Typer(help="API keys: bearer keys for the REST API (stored hashed).", no_args_is_help=True)

out = Console()
err = Console(stderr=True)


def migrated_engine() -> tuple[Any, Any]:
    """Settings and an engine on the platform database, migrated to the newest schema."""
    from contactsync.db.engine import create_engine
    from contactsync.db.migrate import upgrade
    from contactsync.settings import Settings

    settings = Settings()
    engine = create_engine(settings.database_url)
    upgrade(engine, side="platform")
    return settings, engine


def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    with_worker: bool = typer.Option(
        False,
        "--with-worker",
        help="Run one delivery dispatcher in this process (the embedded SQLite set-up).",
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        help="Serve Prometheus /metrics on CONTACTSYNC_METRICS_HOST (127.0.0.1):PORT, never on the API port.",
    ),
) -> None:
    """Migrate the platform schema, then serve the REST API (/api, OpenAPI at /api/openapi.json).

    The admin UI is mounted at / when CONTACTSYNC_ADMIN_PASSWORD is set.
    """
    import uvicorn

    from contactsync.automation.runtime import Runtime
    from contactsync.db.backend import backend_of
    from contactsync.servers import platform_server

    settings, engine = migrated_engine()
    if with_worker and not backend_of(engine).single_writer:
        err.print(
            "note: with PostgreSQL, `contactsync worker` processes can run beside this one", highlight=False
        )
    elif not with_worker:
        err.print(
            "note: this server queues deliveries; `contactsync worker` (or serve --with-worker) sends them "
            "— the log warns if they wait with no worker running",
            highlight=False,
        )
    runtime = Runtime.create(settings, engine=engine)
    seal_plaintext(engine, runtime)
    app = platform_server(
        settings, engine=engine, runtime=runtime, run_dispatcher=with_worker, metrics_port=metrics_port
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="on")
    finally:
        engine.dispose()


def seal_plaintext(engine: Any, runtime: Any) -> None:
    """Seal credentials stored before sealing existed (a no-op once everything is sealed)."""
    from contactsync.db.reseal import seal_unchecked
    from contactsync.tenancy.audit import Actor, record

    with engine.begin() as conn:
        now = runtime.clock()
        changed = seal_unchecked(conn, runtime.keyring, now=now)
        if changed:
            record(conn, Actor.cli(), "secrets.seal", account_id=None, target_type="installation",
                   now=now, detail={"rows": changed})  # fmt: skip
    if changed:
        err.print(f"sealed the credentials of {changed} rows stored in clear", highlight=False)


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="What the key is for (shown in listings)."),
    account: int | None = typer.Option(
        None, "--account", help="Account id (default: the only account, created on first use)."
    ),
    role: str = typer.Option(
        "editor", "--role", help="viewer, editor or owner (owner: members, keys, reveal)."
    ),
    operator: bool = typer.Option(
        False,
        "--operator",
        help="An operator key: no account; manages accounts and users (/api/accounts, /api/users).",
    ),
) -> None:
    """Create a key and print it once; only its SHA-256 digest is stored."""
    from contactsync.automation.runtime import utc_now
    from contactsync.tenancy import keys
    from contactsync.tenancy.audit import Actor, record
    from contactsync.tenancy.roles import OPERATOR, ROLES

    if not operator and role not in ROLES:
        raise typer.BadParameter(f"must be one of {', '.join(ROLES)}", param_hint="--role")
    _settings, engine = migrated_engine()
    try:
        with engine.begin() as conn:
            now = utc_now()
            account_id = None
            if not operator:
                account_id = account if account is not None else keys.default_account(conn, now=now)
            created = keys.create_key(
                conn, account_id=account_id, name=name[:200], role=OPERATOR if operator else role, now=now
            )
            detail = {"name": created.name, "role": created.role}
            record(conn, Actor.cli(), "key.create", account_id=account_id, target_type="key",
                   target_id=created.id, now=now, detail=detail)  # fmt: skip
    finally:
        engine.dispose()
    whose = "the operator" if operator else f"account {created.account_id} ({created.role})"
    err.print(f"key {created.id} ({created.prefix}) for {whose}: shown once, store it now", highlight=False)
    typer.echo(created.key)


@keys_app.command("list")
def keys_list() -> None:
    """Every key with its prefix, account, creation, last use and revocation."""
    from contactsync.tenancy import keys

    _settings, engine = migrated_engine()
    try:
        with engine.connect() as conn:
            found = keys.list_keys(conn)
    finally:
        engine.dispose()
    table = Table("id", "prefix", "account", "role", "name", "created", "last used", "revoked")
    for k in found:
        table.add_row(
            str(k.id),
            k.prefix,
            "" if k.account_id is None else str(k.account_id),
            k.role,
            k.name,
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: int = typer.Argument(..., help="Id from `keys list`.")) -> None:
    """Revoke a key at once."""
    from contactsync.automation.runtime import utc_now
    from contactsync.tenancy import keys
    from contactsync.tenancy.audit import Actor, record

    _settings, engine = migrated_engine()
    try:
        with engine.begin() as conn:
            now = utc_now()
            revoked = keys.revoke_key(conn, key_id, now=now)
            record(conn, Actor.cli(), "key.revoke", account_id=revoked.account_id, target_type="key",
                   target_id=key_id, now=now, detail={"name": revoked.name})  # fmt: skip
    finally:
        engine.dispose()
    typer.echo(f"revoked key {revoked.id} ({revoked.prefix})")


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``keys`` to the root CLI."""
    app.command("serve")(serve_command)
    app.add_typer(keys_app, name="keys")
