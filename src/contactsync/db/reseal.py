"""Re-encrypting every secret at rest: key rotation, and sealing values stored before sealing existed.

The values: each action's secret, previous secret and extra header values, and the header values of
every frozen request in the outbox; on the listener's side, the signing secrets added in its admin UI.
One transaction per database, walked in id order in chunks; a value already sealed under the writing
keyring's primary key is left alone, so running it twice is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from contactsync.db.backend import backend_of
from contactsync.db.listener import secrets as listener_secrets
from contactsync.db.platform import actions, deliveries, job_cursors
from contactsync.db.sealing import Keyring

CHUNK = 1000
SEAL_CURSOR = "seal-plaintext"
"""The ``job_cursors`` row holding the last delivery id :func:`seal_unchecked` has checked."""


def _again(value: str, read: Keyring, write: Keyring) -> str | None:
    """``value`` sealed under ``write``'s primary key, or ``None`` when it already is."""
    return None if write.current(value) else write.seal(read.open(value))


def _headers(headers: Mapping[str, Any], read: Keyring, write: Keyring) -> dict[str, str] | None:
    changed = False
    out = {}
    for name, value in headers.items():
        again = _again(str(value), read, write)
        changed |= again is not None
        out[str(name)] = again if again is not None else str(value)
    return out if changed else None


def _action(row: Any, read: Keyring, write: Keyring) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column in ("secret", "previous_secret"):
        value = getattr(row, column)
        again = _again(value, read, write) if value else None
        if again is not None:
            values[column] = again
    settings = dict(row.settings or {})
    headers = list(settings.get("headers") or [])
    resealed = [(h, _again(str(h["value"]), read, write)) for h in headers]
    if any(again is not None for _, again in resealed):
        settings["headers"] = [
            {**h, "value": again if again is not None else h["value"]} for h, again in resealed
        ]
        values["settings"] = settings
    return values


def reseal(conn: sa.Connection, *, read: Keyring, write: Keyring, after_delivery: int = 0) -> int:
    """Seal every stored secret under ``write``'s primary key (opening with ``read``); how many rows
    changed. Raises :class:`~contactsync.errors.SealedError` if ``read`` cannot open one (nothing is
    then written: the caller's transaction rolls back). Deliveries with ids up to ``after_delivery``
    are left unread (a pass that already checked them)."""
    changed = 0
    a = actions.c
    found = conn.execute(sa.select(a.id, a.secret, a.previous_secret, a.settings).order_by(a.id)).all()
    for action in found:
        values = _action(action, read, write)
        if values:
            conn.execute(actions.update().where(a.id == action.id).values(**values))
            changed += 1
    d = deliveries.c
    after = after_delivery
    while True:
        rows = conn.execute(sa.select(d.id, d.headers).where(d.id > after).order_by(d.id).limit(CHUNK)).all()
        if not rows:
            return changed
        updates = []
        for row in rows:
            headers = _headers(row.headers or {}, read, write)
            if headers is not None:
                updates.append({"b_id": row.id, "headers": headers})
        if updates:
            conn.execute(deliveries.update().where(d.id == sa.bindparam("b_id")), updates)
            changed += len(updates)
        after = rows[-1].id


def seal_unchecked(conn: sa.Connection, keyring: Keyring, *, now: datetime) -> int:
    """:func:`reseal` under ``keyring`` for what an earlier pass has not checked: every action (a few
    per customer), and only the deliveries past the last id checked (queued rows are sealed as they are
    written: ``serve``'s start-up need not read a long history's headers again). How many rows changed."""
    c = job_cursors.c
    conn.execute(backend_of(conn).insert_ignoring(job_cursors).values(name=SEAL_CURSOR, at=now, last_id=0))
    checked = conn.execute(sa.select(c.last_id).where(c.name == SEAL_CURSOR).with_for_update()).scalar_one()
    top = conn.execute(sa.select(sa.func.coalesce(sa.func.max(deliveries.c.id), 0))).scalar_one()
    changed = reseal(conn, read=keyring, write=keyring, after_delivery=int(checked))
    if top > checked:
        conn.execute(job_cursors.update().where(c.name == SEAL_CURSOR).values(at=now, last_id=top))
    return changed


def reseal_listener(conn: sa.Connection, *, read: Keyring, write: Keyring) -> int:
    """:func:`reseal` for a listener's database: the secrets its admin UI added (current and previous)."""
    s = listener_secrets.c
    changed = 0
    for row in conn.execute(sa.select(s.id, s.secret, s.previous_secret).order_by(s.id)).all():
        values = {
            column: again
            for column in ("secret", "previous_secret")
            if (value := getattr(row, column)) and (again := _again(value, read, write)) is not None
        }
        if values:
            conn.execute(listener_secrets.update().where(s.id == row.id).values(**values))
            changed += 1
    return changed
