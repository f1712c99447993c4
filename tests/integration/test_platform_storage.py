"""Storage contract of the platform schema, on SQLite and PostgreSQL: migrations and DB-enforced rules."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from contactsync.db import create_engine, platform_metadata
from contactsync.db import platform as t
from contactsync.db.migrate import alembic_config, upgrade, version_table
from contactsync.delivery.outbox import OutboxRequest, enqueue
from contactsync.errors import ConfigError

NOW = datetime(2026, 1, 2, 3, 4, 5, 123456)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    upgrade(db_url, side="platform")
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


def _account(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.min(t.accounts.c.id))).scalar_one())


def _contact(conn: sa.Connection, list_id: int, email: str) -> int:
    row = conn.execute(
        t.contacts.insert()
        .values(list_id=list_id, email=email, email_key=email.lower(), created_at=NOW, updated_at=NOW)
        .returning(t.contacts.c.id)
    )
    return int(row.scalar_one())


@pytest.fixture
def list_id(engine: sa.Engine) -> int:
    with engine.begin() as conn:
        acc = conn.execute(t.accounts.insert().values(name="a", created_at=NOW).returning(t.accounts.c.id))
        account_id = acc.scalar_one()
        lst = conn.execute(
            t.lists.insert().values(account_id=account_id, name="l", created_at=NOW).returning(t.lists.c.id)
        )
        return int(lst.scalar_one())


def test_migrations_match_the_metadata(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, platform_metadata)
        elsewhere = t.POSTGRESQL_ONLY_INDEXES if conn.dialect.name != "postgresql" else frozenset()
        assert [
            d
            for d in diff
            if not (d[0] == "remove_table" and d[1].name.startswith("alembic_version"))
            and not (d[0] == "add_index" and d[1].name in elsewhere)
        ] == []
        tables = set(sa.inspect(conn).get_table_names())
    assert {tbl.name for tbl in platform_metadata.sorted_tables} <= tables
    assert version_table("platform") in tables


def test_upgrade_is_idempotent(db_url: str, engine: sa.Engine) -> None:
    upgrade(engine, side="platform")
    head = ScriptDirectory.from_config(alembic_config("platform")).get_current_head()
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT version_num FROM {version_table('platform')}")).scalar() == head


def test_unknown_side_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        upgrade("sqlite://", side="nope")


def test_email_is_unique_per_list_case_insensitively(engine: sa.Engine, list_id: int) -> None:
    with engine.begin() as conn:
        _contact(conn, list_id, "Jane@Example.com")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        _contact(conn, list_id, "jane@example.COM")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.contacts)).scalar() == 1


def test_once_key_admits_a_contact_once_but_null_keys_repeat(engine: sa.Engine, list_id: int) -> None:
    with engine.begin() as conn:
        cid = _contact(conn, list_id, "a@b.c")
        aid = conn.execute(
            t.automations.insert()
            .values(
                list_id=list_id, name="x", trigger="manual", conditions={}, created_at=NOW, updated_at=NOW
            )
            .returning(t.automations.c.id)
        ).scalar_one()
        for _ in range(3):
            conn.execute(
                t.automation_entries.insert().values(
                    automation_id=aid, account_id=_account(conn), contact_id=cid, entered_at=NOW
                )
            )
        conn.execute(
            t.automation_entries.insert().values(
                automation_id=aid, account_id=_account(conn), contact_id=cid, entered_at=NOW, once_key=0
            )
        )
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            t.automation_entries.insert().values(
                automation_id=aid, account_id=_account(conn), contact_id=cid, entered_at=NOW, once_key=0
            )
        )


def test_foreign_keys_are_enforced(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        _contact(conn, 999_999, "x@y.z")


def test_outbox_rows_keep_bytes_and_unique_transactionids(engine: sa.Engine, list_id: int) -> None:
    body = bytes(range(256))
    with engine.connect() as conn:
        account_id = _account(conn)
    req = OutboxRequest(
        transactionid=2**62 + 5,
        account_id=account_id,
        endpoint="https://example.com:443",
        method="POST",
        url="https://example.com/hook?a=1",
        body=body,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Api-Key": "k"},
    )
    with engine.begin() as conn:
        enqueue(conn, [req], now=NOW)
        enqueue(conn, [], now=NOW)
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.deliveries)).one()
    assert (row.transactionid, row.body, row.headers, row.state) == (
        2**62 + 5,
        body,
        {"X-Api-Key": "k"},
        "pending",
    )
    assert row.next_attempt_at == NOW
    assert row.created_at == NOW
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        enqueue(conn, [req], now=NOW)


def _event_then_bad_delivery(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        acc = conn.execute(t.accounts.insert().values(name="a", created_at=NOW).returning(t.accounts.c.id))
        account_id = acc.scalar_one()
        event = {"account_id": account_id, "endpoint": "e", "kind": "k", "message": "m", "created_at": NOW}
        conn.execute(t.endpoint_events.insert().values(**event))
        bad = {
            "transactionid": 1,
            "account_id": account_id,
            "endpoint": "e",
            "method": "GET",
            "url": "u",
            "headers": {},
            "body": b"",
        }
        conn.execute(
            t.deliveries.insert().values(
                **bad, state="bogus", next_attempt_at=NOW, created_at=NOW, updated_at=NOW
            )
        )


def test_check_constraints_reject_unknown_states_and_roll_back(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        _event_then_bad_delivery(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.endpoint_events)).scalar() == 0


def _automation(conn: sa.Connection, list_id: int) -> int:
    return int(
        conn.execute(
            t.automations.insert()
            .values(
                list_id=list_id, name="x", trigger="manual", conditions={}, created_at=NOW, updated_at=NOW
            )
            .returning(t.automations.c.id)
        ).scalar_one()
    )


def _run(conn: sa.Connection, automation_id: int, state: str, *, owned: bool = True) -> int:
    """A manual run row; ``owned=False`` for the schema before runs carried their account (0001)."""
    values: dict[str, object] = {"automation_id": automation_id, "state": state}
    if owned:
        values["account_id"] = conn.execute(
            sa.select(t.lists.c.account_id)
            .join(t.automations, t.automations.c.list_id == t.lists.c.id)
            .where(t.automations.c.id == automation_id)
        ).scalar_one()
    return int(
        conn.execute(
            t.manual_runs.insert()
            .values(**values, started_at=NOW, updated_at=NOW)
            .returning(t.manual_runs.c.id)
        ).scalar_one()
    )


def test_one_running_run_per_automation_is_a_database_rule(engine: sa.Engine, list_id: int) -> None:
    with engine.begin() as conn:
        first, other = _automation(conn, list_id), _automation(conn, list_id)
        for state in ("completed", "cancelled", "completed", "running"):
            _run(conn, first, state)
        _run(conn, other, "running")
    with (
        pytest.raises(sa.exc.IntegrityError, match=r"uq_manual_runs_one_running|manual_runs\.automation_id"),
        engine.begin() as conn,
    ):
        _run(conn, first, "running")


def test_upgrade_from_0001_fills_the_gates_and_keeps_the_oldest_of_overlapping_runs(db_url: str) -> None:
    upgrade(db_url, side="platform", revision="0001")
    engine = create_engine(db_url)
    later = datetime(2026, 1, 3)
    try:
        with engine.begin() as conn:
            account_id = conn.execute(
                t.accounts.insert().values(name="a", created_at=NOW).returning(t.accounts.c.id)
            ).scalar_one()
            lst = conn.execute(
                t.lists.insert()
                .values(account_id=account_id, name="l", created_at=NOW)
                .returning(t.lists.c.id)
            ).scalar_one()
            aid, bid = _automation(conn, lst), _automation(conn, lst)
            cid = _contact(conn, lst, "a@b.c")
            for at in (NOW, later, NOW):
                conn.execute(
                    t.automation_entries.insert().values(automation_id=aid, contact_id=cid, entered_at=at)
                )
            conn.execute(
                t.automation_entries.insert().values(automation_id=bid, contact_id=cid, entered_at=NOW)
            )
            # what concurrent starts left behind before the rule existed
            runs = [_run(conn, aid, "running", owned=False) for _ in range(3)]
            runs.append(_run(conn, bid, "running", owned=False))
        upgrade(engine, side="platform")
        with engine.connect() as conn:
            gates = conn.execute(
                sa.select(t.reentry_gates.c.automation_id, t.reentry_gates.c.last_entered_at).order_by(
                    t.reentry_gates.c.automation_id
                )
            ).all()
            states = dict(conn.execute(sa.select(t.manual_runs.c.id, t.manual_runs.c.state)).all())
            finished = conn.execute(
                sa.select(sa.func.count()).where(t.manual_runs.c.finished_at.is_not(None))
            ).scalar_one()
        assert [tuple(g) for g in gates] == [(aid, later), (bid, NOW)]
        assert states == {
            runs[0]: "running",
            runs[1]: "cancelled",
            runs[2]: "cancelled",
            runs[3]: "running",
        }
        assert finished == 2
    finally:
        engine.dispose()
