"""``contactsync db prune``: delete (or with ``--dry-run`` count) history older than its retention.

The dispatcher and the listener's handlers run the same pruning every ``retention_interval_s``; this
command is for a first clean-up, for seeing what the settings would remove, and for cron set-ups
that run no long-lived worker.
"""

from __future__ import annotations

from dataclasses import fields

import typer
from rich.table import Table

from contactsync.cli_ops import db_app, err, one_line_errors, out


@db_app.command("prune")
def db_prune(
    side: str = typer.Option("both", "--side", help="platform, listener or both."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be deleted; delete nothing."),
) -> None:
    """Delete history older than its retention (CONTACTSYNC_RETENTION_*_DAYS; 0 keeps a kind forever)."""
    from contactsync.automation.runtime import utc_now
    from contactsync.db.engine import create_engine
    from contactsync.db.migrate import upgrade
    from contactsync.db.retention import Retention, prune
    from contactsync.settings import Settings
    from contactsync.tenancy.audit import Actor, record

    settings = Settings()
    sides = {"platform": settings.database_url, "listener": settings.listener_database_url}
    if side not in (*sides, "both"):
        raise typer.BadParameter("expected platform, listener or both", param_hint="--side")
    policy = Retention.from_settings(settings)
    table = Table("side", "kind", "kept (days)", "would delete" if dry_run else "deleted")
    with one_line_errors():
        for name, url in sides.items():
            if side not in (name, "both"):
                continue
            engine = create_engine(url)
            try:
                upgrade(engine, side=name)
                report = prune(engine, policy, side=name, now=utc_now(), dry_run=dry_run)
                if name == "platform" and report.total and not dry_run:
                    with engine.begin() as conn:  # history deleted by hand is a change someone made
                        record(
                            conn,
                            Actor.cli(),
                            "retention.prune",
                            account_id=None,
                            target_type="installation",
                            now=utc_now(),
                            detail=report.rows,
                        )
            finally:
                engine.dispose()
            for kind, rows in report.rows.items():
                table.add_row(name, kind, _days(policy, kind), str(rows))
    out.print(table)
    kept = [f.name.removesuffix("_days") for f in fields(policy) if getattr(policy, f.name) == 0]
    if kept:
        err.print(f"kept forever (retention 0): {', '.join(kept)}", highlight=False)


def _days(policy: object, kind: str) -> str:
    base = kind.split(".", 1)
    horizon = {"delivered": "delivered_days", "cancelled": "delivered_days", "failed": "failed_days"}
    name = horizon[base[1]] if base[0] == "deliveries" else f"{kind}_days"
    return f"{getattr(policy, name):g}"
