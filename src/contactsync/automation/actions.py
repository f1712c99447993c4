"""Sync actions stored: create, read, update, delete, the signing secret and its rotation, credentials.

Saving validates the settings (:mod:`contactsync.automation.action_settings`) and records the
endpoint the action sends to. Credentials — the signing secret and the extra header values — are
sealed at rest; an ordinary read shows masked hints, only :func:`reveal` opens them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field

from contactsync import shortcodes
from contactsync.automation.action_settings import (
    Header,
    SyncActionSettings,
    capacity_warnings,
    field_keys,
    validate_settings,
)
from contactsync.automation.runtime import IssuedSecret, Runtime
from contactsync.db import sealing
from contactsync.db.platform import actions, automations, lists
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.delivery.interventions import cancel_for_actions
from contactsync.errors import NotFoundError, ValidationError
from contactsync.wire.signing import generate_secret

SECRET_OVERLAP = timedelta(hours=24)


class ActionOut(BaseModel):
    id: int
    automation_id: int
    settings: SyncActionSettings
    secret: str
    previous_secret_expires_at: datetime | None
    endpoint: str
    created_at: datetime
    updated_at: datetime
    warnings: list[str] = Field(default_factory=list, description="what a default PHP listener would lose")


def _list_of_automation(conn: sa.Connection, automation_id: int) -> int:
    found = conn.execute(sa.select(automations.c.list_id).where(automations.c.id == automation_id)).scalar()
    if found is None:
        raise NotFoundError(f"automation {automation_id} does not exist", field="automation_id")
    return int(found)


def account_of_automation(conn: sa.Connection, automation_id: int) -> int:
    """The account owning ``automation_id`` (through its list)."""
    found = conn.execute(
        sa.select(lists.c.account_id)
        .join(automations, automations.c.list_id == lists.c.id)
        .where(automations.c.id == automation_id)
    ).scalar()
    if found is None:
        raise NotFoundError(f"automation {automation_id} does not exist", field="automation_id")
    return int(found)


def _touch_endpoint(conn: sa.Connection, automation_id: int, endpoint: str, now: datetime) -> None:
    key = endpoint_rows.EndpointKey(account_of_automation(conn, automation_id), endpoint)
    endpoint_rows.mark_edited(conn, key, now=now)


def template_endpoint(template: shortcodes.Template) -> str:
    """The endpoint a compiled URL template sends to (its scheme, host and port are literal text in a
    valid template, so an empty context renders them)."""
    return endpoint_rows.endpoint_key(template.render({}, now=datetime(2020, 1, 1)))


def stored_settings(
    settings: SyncActionSettings, keyring: sealing.Keyring, *, current: Sequence[Header] = ()
) -> dict[str, Any]:
    """The settings as stored: header values sealed. A value equal to the masked hint of the stored
    value of the same header (what a read returned) keeps that stored value."""
    merged = with_stored_values(settings, current, keyring)
    data = settings.model_dump(mode="json")
    data["headers"] = [
        {"name": given.name, "value": kept.value if kept.value != given.value else keyring.seal(given.value)}
        for given, kept in zip(settings.headers, merged.headers, strict=True)
    ]
    return data


def with_stored_values(
    settings: SyncActionSettings, current: Sequence[Header], keyring: sealing.Keyring
) -> SyncActionSettings:
    """``settings`` whose header values that are the masked hint of the same header's stored value
    (what a read showed), or that stored value itself, are that stored, sealed value; the others are
    as given."""
    stored = {h.name.lower(): h.value for h in current}
    headers = []
    for h in settings.headers:
        kept = stored.get(h.name.lower())
        same = kept is not None and h.value in (kept, keyring.hint(kept))
        headers.append(h.model_copy(update={"value": kept}) if same else h)
    return settings.model_copy(update={"headers": headers})


def shown(action: ActionOut, keyring: sealing.Keyring) -> ActionOut:
    """The action as an ordinary read shows it: the secret and header values as masked hints."""
    headers = [h.model_copy(update={"value": keyring.hint(h.value)}) for h in action.settings.headers]
    return action.model_copy(
        update={
            "secret": keyring.hint(action.secret),
            "settings": action.settings.model_copy(update={"headers": headers}),
        }
    )


class Revealed(BaseModel):
    """An action's credentials in clear: only an explicit reveal returns this."""

    secret: str
    previous_secret: str | None = Field(description="still signing alongside until it expires")
    previous_secret_expires_at: datetime | None
    headers: list[Header]


def reveal(conn: sa.Connection, keyring: sealing.Keyring, action_id: int, *, now: datetime) -> Revealed:
    """The action's signing secret(s) and header values, opened."""
    row = conn.execute(sa.select(actions).where(actions.c.id == action_id)).first()
    if row is None:
        raise NotFoundError(f"action {action_id} does not exist", field="action_id")
    previous = row.previous_secret
    in_force = previous and (row.previous_secret_expires_at is None or row.previous_secret_expires_at > now)
    return Revealed(
        secret=keyring.open(row.secret),
        previous_secret=keyring.open(previous) if in_force else None,
        previous_secret_expires_at=row.previous_secret_expires_at if in_force else None,
        headers=[
            Header(name=h["name"], value=keyring.open(h["value"]))
            for h in (row.settings or {}).get("headers", [])
        ],
    )


def create_action(
    conn: sa.Connection, rt: Runtime, *, automation_id: int, settings: SyncActionSettings
) -> ActionOut:
    """Validate and store a new action with a fresh secret."""
    list_id = _list_of_automation(conn, automation_id)
    template = validate_settings(settings, field_keys(conn, list_id), country_code=rt.default_country_code)
    now = rt.clock()
    endpoint = template_endpoint(template)
    secret = generate_secret()
    action_id = conn.execute(
        actions.insert()
        .values(
            automation_id=automation_id,
            kind="sync_contact",
            settings=stored_settings(settings, rt.keyring),
            secret=rt.keyring.seal(secret),
            endpoint=endpoint,
            created_at=now,
            updated_at=now,
        )
        .returning(actions.c.id)
    ).scalar_one()
    _touch_endpoint(conn, automation_id, endpoint, now)
    _issued(conn, rt, automation_id, int(action_id), secret, settings.name)
    return get_action(conn, int(action_id))


def _issued(
    conn: sa.Connection, rt: Runtime, automation_id: int, action_id: int, secret: str, action_name: str
) -> None:
    """Tell :attr:`Runtime.on_secret`, if set, about an action's new secret."""
    if rt.on_secret is None:
        return
    row = conn.execute(
        sa.select(lists.c.account_id, automations.c.name)
        .join(lists, lists.c.id == automations.c.list_id)
        .where(automations.c.id == automation_id)
    ).one()
    rt.on_secret(
        IssuedSecret(int(row.account_id), automation_id, str(row.name), action_id, secret, action_name)
    )


def update_action(
    conn: sa.Connection, rt: Runtime, action_id: int, settings: SyncActionSettings
) -> ActionOut:
    """Replace the settings (validated like on create); the secret is kept."""
    current = get_action(conn, action_id)
    list_id = _list_of_automation(conn, current.automation_id)
    template = validate_settings(settings, field_keys(conn, list_id), country_code=rt.default_country_code)
    now = rt.clock()
    endpoint = template_endpoint(template)
    if endpoint != current.endpoint:
        _no_credentials_to(endpoint, settings, current.settings.headers, rt.keyring)
    conn.execute(
        actions.update()
        .where(actions.c.id == action_id)
        .values(
            settings=stored_settings(settings, rt.keyring, current=current.settings.headers),
            endpoint=endpoint,
            updated_at=now,
        )
    )
    _touch_endpoint(conn, current.automation_id, endpoint, now)
    return get_action(conn, action_id)


def _no_credentials_to(
    endpoint: str, settings: SyncActionSettings, current: Sequence[Header], keyring: sealing.Keyring
) -> None:
    """A stored header value (kept by sending back its masked hint) never follows the action to
    another endpoint: whoever moves it must type the credential in, which an editor who cannot
    reveal it does not know — otherwise moving the URL would hand the secret to any host."""
    kept = with_stored_values(settings, current, keyring)
    for given, merged in zip(settings.headers, kept.headers, strict=True):
        if merged.value is not given.value:
            raise ValidationError(
                f"header {given.name}: enter its value again; a stored credential is not sent to a new "
                f"endpoint ({endpoint})",
                field="headers",
            )


def get_action(conn: sa.Connection, action_id: int) -> ActionOut:
    row = conn.execute(sa.select(actions).where(actions.c.id == action_id)).first()
    if row is None:
        raise NotFoundError(f"action {action_id} does not exist", field="action_id")
    n_fields = len(field_keys(conn, _list_of_automation(conn, row.automation_id))) // 2
    return action_from_row(row, n_fields=n_fields)


def action_from_row(row: sa.Row[Any], *, n_fields: int) -> ActionOut:
    """An ``actions`` row as the service returns it (``n_fields``: the list's field count, for warnings)."""
    settings = SyncActionSettings.model_validate(row.settings)
    return ActionOut(
        warnings=capacity_warnings(settings, n_fields),
        id=row.id,
        automation_id=row.automation_id,
        settings=settings,
        secret=row.secret,
        previous_secret_expires_at=row.previous_secret_expires_at if row.previous_secret else None,
        endpoint=row.endpoint,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def list_actions(conn: sa.Connection, automation_id: int) -> list[ActionOut]:
    ids = conn.execute(
        sa.select(actions.c.id).where(actions.c.automation_id == automation_id).order_by(actions.c.id)
    ).scalars()
    return [get_action(conn, int(i)) for i in ids]


def delete_action(conn: sa.Connection, action_id: int, *, now: datetime) -> int:
    """Delete the action and cancel its pending deliveries (without it they cannot be signed);
    returns how many were cancelled."""
    cancelled = cancel_for_actions(conn, [action_id], now=now)
    if conn.execute(actions.delete().where(actions.c.id == action_id)).rowcount == 0:
        raise NotFoundError(f"action {action_id} does not exist", field="action_id")
    return cancelled


def rotate_secret(conn: sa.Connection, rt: Runtime, action_id: int) -> ActionOut:
    """New secret now; the old one keeps signing (second signature) for 24 hours."""
    current = get_action(conn, action_id)
    now = rt.clock()
    secret = generate_secret()
    conn.execute(
        actions.update()
        .where(actions.c.id == action_id)
        .values(
            secret=rt.keyring.seal(secret),
            previous_secret=current.secret,
            previous_secret_expires_at=now + SECRET_OVERLAP,
            updated_at=now,
        )
    )
    _issued(conn, rt, current.automation_id, action_id, secret, current.settings.name)
    return get_action(conn, action_id)
