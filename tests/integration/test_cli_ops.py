"""Operator CLI commands against a real SQLite file: results on stdout, one-line errors, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from contactsync.automation.runtime import Runtime
from contactsync.cli import app
from contactsync.db.engine import create_engine
from contactsync.db.platform import contacts, deliveries
from contactsync.settings import Settings
from support.platform import manual_automation


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "CONTACTSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'platform.db'}",
        "CONTACTSYNC_LISTENER_DATABASE_URL": f"sqlite:///{tmp_path / 'listener.db'}",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def one_line_error(result: Any) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.strip().splitlines() if " database: " not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return str(lines[0])


@pytest.fixture
def platform(env: dict[str, str]) -> Iterator[dict[str, Any]]:
    assert run("db", "upgrade").exit_code == 0
    engine = create_engine(env["CONTACTSYNC_DATABASE_URL"])
    made = manual_automation(engine, Runtime.create(Settings(), engine=engine))
    yield {"engine": engine, **made}
    engine.dispose()


def test_db_upgrade_migrates_both_sides_and_is_idempotent(env: dict[str, str]) -> None:
    first = run("db", "upgrade")
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == ["platform: at head", "listener: at head"]
    assert run("db", "upgrade", "--side", "listener").stdout.strip() == "listener: at head"
    assert run("db", "upgrade", "--side", "nope").exit_code == 2


def test_import_csv_then_ndjson_upserts_by_email(platform: dict[str, Any], tmp_path: Path) -> None:
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("email,phone,City\njane@example.com,+15551234567,Paris\nOMAR@example.com,,Lagos\n")
    result = run("import", str(csv_file), "--list", str(platform["list"]))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "rows": 2,
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "deliveries": 0,
    }
    nd = tmp_path / "people.ndjson"
    nd.write_text(
        '{"email": "omar@example.com", "fields": {"CITY": "Accra"}}\n{"email": "jane@example.com"}\n'
    )
    again = run("import", str(nd), "--list", str(platform["list"]))
    assert json.loads(again.stdout) == {
        "rows": 2,
        "created": 0,
        "updated": 1,
        "unchanged": 1,
        "deliveries": 0,
    }


def test_a_bad_row_imports_nothing_and_prints_one_line(platform: dict[str, Any], tmp_path: Path) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("email,City\nok@example.com,Paris\nnot-an-email,Rome\n")
    message = one_line_error(run("import", str(csv_file), "--list", str(platform["list"])))
    assert "row 2" in message
    with platform["engine"].connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(contacts)).scalar_one() == 0
    assert "cannot read" in one_line_error(run("import", str(tmp_path / "missing.csv"), "--list", "1"))
    unknown = tmp_path / "x.csv"
    unknown.write_text("email\na@example.com\n")
    assert "list 999" in one_line_error(run("import", str(unknown), "--list", "999"))


def test_import_takes_the_field_names_a_person_sees_as_headers(
    platform: dict[str, Any], tmp_path: Path
) -> None:
    from contactsync.automation.contacts import find_contact, get_contact
    from contactsync.automation.lists import FieldIn, create_field

    engine, lid = platform["engine"], platform["list"]
    with engine.begin() as conn:
        create_field(conn, FieldIn(list_id=lid, name="First name", type="text"), now=datetime(2026, 1, 1))
        create_field(conn, FieldIn(list_id=lid, name="Visits", type="number"), now=datetime(2026, 1, 1))
    people = tmp_path / "people.csv"
    people.write_text(
        "Email,First Name,city,VISITS\nada@example.com,Ada,London,3\nbob@example.com,Bob,Paris,\n"
    )
    result = run("import", str(people), "--list", str(lid))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["created"] == 2
    keys = tmp_path / "keys.csv"  # the shortcode keys still work, in any case
    keys.write_text("email,FIRST_NAME,visits\nbob@example.com,Robert,7.0\n")
    assert json.loads(run("import", str(keys), "--list", str(lid)).stdout)["updated"] == 1
    with engine.connect() as conn:
        ada = get_contact(conn, find_contact(conn, list_id=lid, email="ada@example.com") or 0)
        bob = get_contact(conn, find_contact(conn, list_id=lid, email="bob@example.com") or 0)
    assert {v.name: v.value for v in ada.fields} == {"City": "London", "First name": "Ada", "Visits": "3"}
    assert {v.name: v.value for v in bob.fields} == {"City": "Paris", "First name": "Robert", "Visits": "7"}
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("email,Shoe size\ncy@example.com,42\n")
    assert "has no field 'Shoe size'" in one_line_error(run("import", str(unknown), "--list", str(lid)))


def test_import_without_a_migrated_database_says_so_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    people.write_text("email\nada@example.com\n")
    database = (tmp_path / "platform.db").resolve()
    missing = one_line_error(run("import", str(people), "--list", "1"))
    assert missing == (
        f"error: the platform database {database} does not exist: create it with `contactsync db upgrade` "
        "(CONTACTSYNC_DATABASE_URL names it)"
    )
    assert not database.exists()  # asking did not create an empty file
    empty_file = create_engine(env["CONTACTSYNC_DATABASE_URL"])
    empty_file.connect().close()  # an empty database: no schema
    empty_file.dispose()
    empty = one_line_error(run("import", str(people), "--list", "1"))
    assert empty.startswith(
        f"error: the platform database {database} has no platform schema yet: migrate it with"
    )
    assert "no such table" not in empty


def test_automations_run_then_retry_and_recover(platform: dict[str, Any], tmp_path: Path) -> None:
    people = tmp_path / "p.csv"
    people.write_text("email,City\n" + "".join(f"p{i}@example.com,Town {i}\n" for i in range(25)))
    assert run("import", str(people), "--list", str(platform["list"])).exit_code == 0
    result = run("automations", "run", str(platform["automation"]), "--chunk-size", "10")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["state"] == "completed"
    assert summary["scanned"] == summary["enqueued"] == 25
    engine = platform["engine"]
    with engine.connect() as conn:
        ids = list(conn.execute(sa.select(deliveries.c.id).order_by(deliveries.c.id)).scalars())
    assert len(ids) == 25
    # pending deliveries cannot be retried: the exit code says so
    pending = run("deliveries", "retry", str(ids[0]))
    assert pending.exit_code == 1
    assert json.loads(pending.stdout) == {"requested": 1, "queued": 0}
    with engine.begin() as conn:  # as if every attempt had failed
        conn.execute(deliveries.update().values(state="failed", attempt_count=8))
    retried = run("deliveries", "retry", str(ids[0]), str(ids[1]))
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout) == {"requested": 2, "queued": 2}
    recovered = run("deliveries", "recover", "--action", str(platform["action"]), "--since", "2020-01-01")
    assert recovered.exit_code == 0, recovered.output
    assert json.loads(recovered.stdout) == {"failed": 23, "queued": 23}
    with engine.connect() as conn:
        states = dict(
            conn.execute(sa.select(deliveries.c.state, sa.func.count()).group_by(deliveries.c.state)).all()
        )
    assert states == {"pending": 25}
    assert "automation 999" in one_line_error(run("automations", "run", "999"))


@pytest.mark.parametrize(
    "command",
    [
        ["demo"],
        ["import"],
        ["automations", "run"],
        ["deliveries", "retry"],
        ["deliveries", "recover"],
        ["db", "upgrade"],
        ["db", "prune"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_resend_ignores_reentry_after_asking(platform: dict[str, Any], tmp_path: Path) -> None:
    people = tmp_path / "p.csv"
    people.write_text("email,City\n" + "".join(f"r{i}@example.com,Town\n" for i in range(4)))
    assert run("import", str(people), "--list", str(platform["list"])).exit_code == 0
    automation = str(platform["automation"])
    assert json.loads(run("automations", "run", automation).stdout)["enqueued"] == 4
    assert json.loads(run("automations", "run", automation).stdout)["enqueued"] == 0  # `once`
    declined = CliRunner().invoke(app, ["automations", "run", automation, "--ignore-reentry"], input="n\n")
    assert declined.exit_code == 1
    assert "resend to the 4 of 4 contacts" in declined.stderr
    resent = run("automations", "run", automation, "--ignore-reentry", "--yes")
    assert resent.exit_code == 0, resent.output
    summary = json.loads(resent.stdout)
    assert summary["enqueued"] == 4
    assert summary["ignore_reentry"] is True
    with platform["engine"].connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar_one() == 8
        audited = conn.execute(sa.text("SELECT action FROM audit_log WHERE action LIKE 'run.%' ORDER BY id"))
        assert list(audited.scalars()) == ["run.start", "run.start", "run.resend"]


def test_db_prune_dry_run_then_prune(platform: dict[str, Any], env: dict[str, str], monkeypatch: Any) -> None:
    engine = platform["engine"]
    with engine.begin() as conn:  # two delivered deliveries, one of them finished 40 days ago
        for tid, age in ((1, 40), (2, 1)):
            conn.execute(
                sa.text(
                    "INSERT INTO deliveries (transactionid, account_id, endpoint, method, url, headers, "
                    "body, content_type, state, attempt_count, next_attempt_at, created_at, updated_at) "
                    "VALUES (:t, 1, 'https://crm.example', 'GET', 'https://crm.example/in', '{}', X'', '', "
                    "'delivered', 1, :at, :at, :at)"
                ),
                {"t": tid, "at": datetime.now(UTC).replace(tzinfo=None) - timedelta(days=age)},
            )
    monkeypatch.setenv("CONTACTSYNC_RETENTION_DELIVERED_DAYS", "30")
    counted = run("db", "prune", "--dry-run", "--side", "platform")
    assert counted.exit_code == 0, counted.output
    assert "deliveries.delivered" in counted.stdout
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar_one() == 2
    pruned = run("db", "prune", "--side", "platform")
    assert pruned.exit_code == 0, pruned.output
    with engine.connect() as conn:
        left = conn.execute(sa.select(deliveries.c.transactionid)).scalars().all()
        audited = conn.execute(sa.text("SELECT action FROM audit_log WHERE action = 'retention.prune'")).all()
    assert left == [2]
    assert len(audited) == 1


def test_commands_name_the_database_they_use(env: dict[str, str], tmp_path: Path) -> None:
    listed = run("keys", "list")
    assert listed.exit_code == 0, listed.output
    assert f"platform database: {tmp_path / 'platform.db'}" in listed.stderr
    both = run("db", "upgrade")
    assert f"listener database: {tmp_path / 'listener.db'}" in both.stderr
    assert " database: " not in run("render", "--template", "https://x.test/").stderr
