"""Secrets at rest on SQLite and PostgreSQL: nothing a customer entered as a credential is stored in
clear, reads show masked hints, an explicit reveal shows it, and a key rotation leaves the old key
opening nothing while every action still signs correctly."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from typer.testing import CliRunner

from contactsync.cli import app as cli
from contactsync.db import create_engine, platform_metadata, sealing
from contactsync.db import listener as listener_db
from contactsync.db import platform as t
from contactsync.db.migrate import upgrade
from contactsync.db.reseal import reseal, reseal_listener
from contactsync.delivery.dispatcher import Dispatcher, DispatcherConfig
from contactsync.delivery.netguard import NetPolicy
from contactsync.errors import SealedError
from contactsync.listener import secrets as listener_secrets
from contactsync.settings import Settings
from contactsync.wire import signing
from support.api import Api, api_client, automation_with_action
from support.delivery import Receiver, wait_for

HEADER_VALUE = "Bearer header-credential-5f1e2d3c4b5a"
LOOPBACK = NetPolicy(allow_private_networks=True)


def _world(api: Api, url: str) -> dict[str, Any]:
    headers = [{"name": "Authorization", "value": HEADER_VALUE}]
    lst, automation, action = automation_with_action(api, url, headers=headers)
    api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": "jane@example.com"})
    return {"list": lst, "automation": automation, "action": action}


def _stored_bytes(engine: sa.Engine, db_url: str) -> bytes:
    """Everything the database holds, as raw bytes: the SQLite files, or every PostgreSQL row as text."""
    if engine.dialect.name == "sqlite":
        path = Path(db_url.split(":///", 1)[1])
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    out: list[bytes] = []
    with engine.connect() as conn:
        for table in platform_metadata.sorted_tables:
            rows = conn.exec_driver_sql(f'SELECT CAST(x AS text) FROM "{table.name}" AS x').scalars()
            out.extend(str(r).encode() for r in rows)
            for column in table.columns:
                if isinstance(column.type, sa.LargeBinary):
                    out.extend(bytes(v) for v in conn.execute(sa.select(column)).scalars() if v)
    return b"\n".join(out)


def test_credentials_are_sealed_at_rest_masked_on_read_and_revealed_on_demand(db_url: str) -> None:
    with api_client(db_url) as api:
        world = _world(api, "https://hooks.example.com/in")
        action_id = world["action"]["id"]
        revealed = api.ok("POST", f"/api/actions/{action_id}/reveal")
        assert revealed["secret"].startswith("whsec_")
        assert revealed["headers"] == [{"name": "Authorization", "value": HEADER_VALUE}]
        read = api.ok("GET", f"/api/actions/{action_id}")
        assert read["secret"] == sealing.mask(revealed["secret"]) != revealed["secret"]
        [header] = read["settings"]["headers"]
        assert header["value"] == sealing.mask(HEADER_VALUE)
        # a read sent back unchanged keeps the stored value; a new value replaces it
        api.ok("PUT", f"/api/actions/{action_id}", json=read["settings"])
        assert api.ok("POST", f"/api/actions/{action_id}/reveal")["headers"][0]["value"] == HEADER_VALUE
        [delivery] = api.ok("GET", "/api/deliveries")["items"]
        detail = api.ok("GET", f"/api/deliveries/{delivery['id']}")
        assert detail["headers"]["Authorization"] == sealing.mask(HEADER_VALUE)
        for response in (api.get("/api/automations/1/actions"), api.get(f"/api/deliveries/{delivery['id']}")):
            assert HEADER_VALUE not in response.text
            assert revealed["secret"] not in response.text
        stored = _stored_bytes(api.engine, db_url)
    secret_key = revealed["secret"].removeprefix("whsec_")
    for plaintext in (HEADER_VALUE, "header-credential-5f1e2d3c4b5a", revealed["secret"], secret_key):
        assert plaintext.encode() not in stored, plaintext
    assert b"https://hooks.example.com/in" in stored  # the search does see what is stored in clear


def _sealed_values(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        found = list(conn.execute(sa.select(t.actions.c.secret)).scalars())
        for settings in conn.execute(sa.select(t.actions.c.settings)).scalars():
            found.extend(h["value"] for h in settings.get("headers", []))
        for headers in conn.execute(sa.select(t.deliveries.c.headers)).scalars():
            found.extend(headers.values())
    return found


def test_after_a_key_rotation_the_old_key_opens_nothing_and_actions_still_sign(db_url: str) -> None:
    old_key, new_key = sealing.generate_key(), sealing.generate_key()
    old, new = sealing.Keyring.of([old_key]), sealing.Keyring.of([new_key])

    async def main() -> None:
        receiver = Receiver()

        async def ok(_request: web.Request) -> web.Response:
            return web.Response(status=200, text="ok")

        await receiver.add("in", ok)
        with api_client(db_url, secrets_key=old_key) as api:
            world = _world(api, receiver.url("in"))
            action_id = world["action"]["id"]
            secret = api.ok("POST", f"/api/actions/{action_id}/reveal")["secret"]
            with api.engine.begin() as conn:
                assert reseal(conn, read=old, write=new) == 2  # the action and its delivery
            engine = create_engine(db_url)
        try:
            values = _sealed_values(engine)
            assert values
            assert all(sealing.is_sealed(v) for v in values)
            for value in values:
                with pytest.raises(SealedError):
                    old.open(value)
            assert {new.open(v) for v in values} >= {HEADER_VALUE, secret}
            stop = asyncio.Event()
            dispatcher = Dispatcher(engine, config=DispatcherConfig(policy=LOOPBACK, keyring=new))
            task = asyncio.create_task(dispatcher.run(stop=stop))
            try:
                await wait_for(lambda: bool(receiver.arrivals.get("in")), what="the signed delivery")
            finally:
                stop.set()
                await task
        finally:
            engine.dispose()
            await receiver.close()
        [arrival] = receiver.arrivals["in"]
        assert arrival.headers["Authorization"] == HEADER_VALUE
        lowered = {k.lower(): v for k, v in arrival.headers.items()}
        signing.verify(lowered, arrival.body, secret, now=int(lowered["webhook-timestamp"]))

    asyncio.run(main())


def test_embedded_default_key_file_is_created_0600_and_rotate_key_replaces_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    settings = Settings(database_url=url, secrets_key="")
    keyring = sealing.keyring_from_settings(settings)
    path = tmp_path / "platform.db.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_text()
    assert sealing.keyring_from_settings(settings).primary_id == keyring.primary_id  # read, not regenerated
    with api_client(url, secrets_key="") as api:
        _world(api, "https://hooks.example.com/in")
    env = {**os.environ, "CONTACTSYNC_DATABASE_URL": url, "CONTACTSYNC_SECRETS_KEY": ""}
    result = CliRunner().invoke(cli, ["secrets", "rotate-key"], env=env)
    assert result.exit_code == 0, result.output
    assert path.read_text() != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path / "platform.db.key.new").exists()
    engine = create_engine(url)
    try:
        rotated = sealing.keyring_from_settings(settings)
        for value in _sealed_values(engine):
            rotated.open(value)
            with pytest.raises(SealedError):
                keyring.open(value)
    finally:
        engine.dispose()


def _all_open_with(keyring: sealing.Keyring, platform_url: str) -> None:
    """Every sealed value of the platform's database opens with ``keyring`` (else SealedError)."""
    engine = create_engine(platform_url)
    try:
        for value in _sealed_values(engine):
            keyring.open(value)
    finally:
        engine.dispose()


def _said(result: Any) -> str:
    """What a command printed and the error it stopped with, on one line (the console wraps)."""
    return " ".join(f"{result.output} {result.exception or ''}".split())


def _listener_with_secret(url: str, keyring: sealing.Keyring, secret: str) -> None:
    upgrade(url, side="listener")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            listener_secrets.add(conn, keyring, label="platform", secret=secret, now_ms=0)
            listener_secrets.rotate(conn, keyring, 1, secret=signing.generate_secret(), now_ms=0)
    finally:
        engine.dispose()


def _listener_values(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            s = listener_db.secrets.c
            return [v for row in conn.execute(sa.select(s.secret, s.previous_secret)) for v in row if v]
    finally:
        engine.dispose()


def test_a_rotation_of_a_key_both_sides_read_reseals_the_listeners_secrets_too(
    db_url: str, tmp_path: Path
) -> None:
    """One CONTACTSYNC_SECRETS_KEY seals both databases: after rotate-key, the listener's secrets (current
    and the one in its grace period) open with the new key only, so a listener restarted with it verifies."""
    old_key = sealing.generate_key()
    old = sealing.Keyring.of([old_key])
    listener_url = f"sqlite:///{tmp_path / 'listener.db'}"
    secret = signing.generate_secret()
    _listener_with_secret(listener_url, old, secret)
    with api_client(db_url, secrets_key=old_key) as api:
        _world(api, "https://hooks.example.com/in")
    env = {"CONTACTSYNC_DATABASE_URL": db_url, "CONTACTSYNC_LISTENER_DATABASE_URL": listener_url}
    result = CliRunner().invoke(
        cli, ["secrets", "rotate-key"], env={**env, "CONTACTSYNC_SECRETS_KEY": old_key}
    )
    assert result.exit_code == 0, result.output
    new = sealing.Keyring.of([result.stdout.strip().splitlines()[-1]])
    assert "in platform and listener databases" in result.stderr
    values = _listener_values(listener_url)
    assert len(values) == 2
    for value in values:
        with pytest.raises(SealedError):
            old.open(value)
    assert secret in {new.open(v) for v in values}
    _all_open_with(new, db_url)


def test_embedded_default_keys_rotate_one_side_at_a_time(tmp_path: Path) -> None:
    """Beside SQLite files each database has its own key file: rotating the platform's leaves the
    listener's key and values alone, and --listener rotates the listener's."""
    platform_url, listener_url = f"sqlite:///{tmp_path / 'p.db'}", f"sqlite:///{tmp_path / 'l.db'}"
    settings = Settings(database_url=platform_url, listener_database_url=listener_url, secrets_key="")
    listener_ring = sealing.keyring_from_settings(settings, database_url=listener_url)
    _listener_with_secret(listener_url, listener_ring, signing.generate_secret())
    with api_client(platform_url, secrets_key="") as api:
        _world(api, "https://hooks.example.com/in")
    env = {
        "CONTACTSYNC_DATABASE_URL": platform_url,
        "CONTACTSYNC_LISTENER_DATABASE_URL": listener_url,
        "CONTACTSYNC_SECRETS_KEY": "",
    }
    listener_before, key_before = _listener_values(listener_url), (tmp_path / "l.db.key").read_text()
    result = CliRunner().invoke(cli, ["secrets", "rotate-key"], env=env)
    assert result.exit_code == 0, result.output
    assert "in platform database" in result.output
    assert _listener_values(listener_url) == listener_before
    assert (tmp_path / "l.db.key").read_text() == key_before
    result = CliRunner().invoke(cli, ["secrets", "rotate-key", "--listener"], env=env)
    assert result.exit_code == 0, result.output
    rotated = sealing.keyring_from_settings(settings, database_url=listener_url)
    assert rotated.primary_id != listener_ring.primary_id
    for value in _listener_values(listener_url):
        rotated.open(value)
        with pytest.raises(SealedError):
            listener_ring.open(value)


def test_serve_seals_headers_stored_in_clear_once_and_then_reads_only_newer_deliveries(db_url: str) -> None:
    """The start-up seal checks each delivery once: a restart reads only deliveries queued since the last."""
    from contactsync.api.commands import seal_plaintext
    from contactsync.automation.runtime import Runtime

    key = sealing.generate_key()
    keyring = sealing.Keyring.of([key])
    in_clear = {"Authorization": HEADER_VALUE}

    def headers(delivery_id: int) -> dict[str, str]:
        with api.engine.connect() as conn:
            found = conn.execute(sa.select(t.deliveries.c.headers).where(t.deliveries.c.id == delivery_id))
            return dict(found.scalar_one())

    def store_in_clear(delivery_id: int) -> None:  # as written before sealing existed
        with api.engine.begin() as conn:
            conn.execute(
                t.deliveries.update().where(t.deliveries.c.id == delivery_id).values(headers=in_clear)
            )

    with api_client(db_url, secrets_key=key) as api:
        world = _world(api, "https://hooks.example.com/in")
        runtime = Runtime.create(Settings(database_url=db_url, secrets_key=key), engine=api.engine)
        with api.engine.connect() as conn:
            (first,) = conn.execute(sa.select(t.deliveries.c.id)).scalars()
        store_in_clear(first)
        seal_plaintext(api.engine, runtime)  # the first start checks every delivery
        assert keyring.open(headers(first)["Authorization"]) == HEADER_VALUE

        store_in_clear(first)
        api.ok("POST", f"/api/lists/{world['list']['id']}/contacts", 201, json={"email": "joe@example.com"})
        with api.engine.connect() as conn:
            (second,) = conn.execute(sa.select(t.deliveries.c.id).where(t.deliveries.c.id > first)).scalars()
        store_in_clear(second)
        seal_plaintext(api.engine, runtime)  # a restart: only what was queued since
        assert keyring.open(headers(second)["Authorization"]) == HEADER_VALUE
        assert headers(first) == in_clear  # checked before: not read again


def test_a_shared_key_file_rotation_that_stopped_after_one_commit_is_finished_with_its_own_key(
    tmp_path: Path,
) -> None:
    """One CONTACTSYNC_SECRETS_KEY_FILE for both databases. A rotation that re-sealed the listener's
    secrets and then stopped left its key in ``<file>.new``: the next run finishes with that key (a
    fresh one would leave the listener's values under a key no file holds)."""
    key_file = tmp_path / "shared.key"
    old_key, stopped_key = sealing.generate_key(), sealing.generate_key()
    sealing.write_key_file(key_file, [old_key])
    old, stopped = sealing.Keyring.of([old_key]), sealing.Keyring.of([stopped_key])
    platform_url, listener_url = f"sqlite:///{tmp_path / 'p.db'}", f"sqlite:///{tmp_path / 'l.db'}"
    secret = signing.generate_secret()
    _listener_with_secret(listener_url, old, secret)
    with api_client(platform_url, secrets_key=old_key) as api:
        _world(api, "https://hooks.example.com/in")
    engine = create_engine(listener_url)
    try:
        with engine.begin() as conn:  # what the stopped run committed
            assert reseal_listener(conn, read=old, write=stopped) == 1
    finally:
        engine.dispose()
    sealing.write_key_file(sealing.rotation_file(key_file), [stopped_key])
    env = {
        "CONTACTSYNC_DATABASE_URL": platform_url,
        "CONTACTSYNC_LISTENER_DATABASE_URL": listener_url,
        "CONTACTSYNC_SECRETS_KEY": "",
        "CONTACTSYNC_SECRETS_KEY_FILE": str(key_file),
    }
    refused = CliRunner().invoke(cli, ["secrets", "rotate-key", "--new-key", sealing.generate_key()], env=env)
    assert refused.exit_code != 0
    assert "pending" in _said(refused)
    result = CliRunner().invoke(cli, ["secrets", "rotate-key"], env=env)
    assert result.exit_code == 0, result.output
    assert "in platform and listener databases" in result.output
    assert sealing.read_key_file(key_file) == [stopped_key]
    assert not sealing.rotation_file(key_file).exists()
    assert secret in {stopped.open(v) for v in _listener_values(listener_url)}
    _all_open_with(stopped, platform_url)


def test_a_listener_database_this_host_does_not_have_is_neither_resealed_nor_created(tmp_path: Path) -> None:
    key = sealing.generate_key()
    platform_url, listener_path = f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "nowhere.db"
    with api_client(platform_url, secrets_key=key) as api:
        _world(api, "https://hooks.example.com/in")
    env = {
        "CONTACTSYNC_DATABASE_URL": platform_url,
        "CONTACTSYNC_LISTENER_DATABASE_URL": f"sqlite:///{listener_path}",
        "CONTACTSYNC_SECRETS_KEY": key,
    }
    result = CliRunner().invoke(cli, ["secrets", "rotate-key"], env=env)
    assert result.exit_code == 0, result.output
    assert "in platform database" in result.output
    assert "a listener elsewhere" in _said(result)  # told that another database may still need the old key
    refused = CliRunner().invoke(cli, ["secrets", "rotate-key", "--listener"], env=env)
    assert refused.exit_code != 0
    assert "no listener database" in _said(refused)
    assert not listener_path.exists()
