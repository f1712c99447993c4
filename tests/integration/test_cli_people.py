"""``contactsync accounts`` and ``contactsync users`` on a real SQLite file and PostgreSQL, and the audit
row every mutating CLI command writes: one, actor ``cli``, none when the command fails."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from contactsync.automation.runtime import Runtime, utc_now
from contactsync.cli import app
from contactsync.db.engine import create_engine
from contactsync.db.migrate import upgrade
from contactsync.db.platform import admin_sessions, audit_log, deliveries
from contactsync.settings import Settings
from contactsync.tenancy import people
from contactsync.tenancy.audit import AuditEntry, AuditFilter, entries
from support.platform import manual_automation


class Cli:
    """The CLI run against one database, and what it left in the audit log."""

    def __init__(self, env: dict[str, str], engine: sa.Engine) -> None:
        self.env = env
        self.engine = engine

    def run(self, *args: str, stdin: str | None = None) -> Result:
        return CliRunner().invoke(app, list(args), env=self.env, input=stdin, catch_exceptions=False)

    def last_audit_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(audit_log.c.id), 0))).scalar_one())

    def audit_since(self, before: int) -> list[AuditEntry]:
        """The rows written after row ``before``, oldest first (as the operator's log shows them)."""
        with self.engine.connect() as conn:
            newest_first = entries(conn, AuditFilter(account_id=None), limit=100)
        return [e for e in reversed(newest_first) if e.id > before]

    def audited(self, *args: str, stdin: str | None = None) -> tuple[Result, AuditEntry]:
        """Run a command that must succeed and write exactly one audit row, by the CLI; both."""
        before = self.last_audit_id()
        result = self.run(*args, stdin=stdin)
        assert result.exit_code == 0, result.output
        rows = self.audit_since(before)
        assert len(rows) == 1, rows
        assert rows[0].actor_kind == "cli"
        assert rows[0].actor_label.startswith("cli:")
        assert rows[0].actor_id is None
        return result, rows[0]

    def fails(self, *args: str, stdin: str | None = None) -> str:
        """Run a command that must fail with one ``error: …`` line, exit code 1, and no audit row."""
        before = self.last_audit_id()
        result = self.run(*args, stdin=stdin)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.stderr.strip().splitlines() if " database: " not in line]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        assert "Traceback" not in result.output
        assert result.stdout == ""
        assert self.last_audit_id() == before
        return lines[0]

    def table(self, *args: str) -> list[list[str]]:
        """The body rows of a table a read-only command prints (which writes no audit row)."""
        before = self.last_audit_id()
        result = self.run(*args)
        assert result.exit_code == 0, result.output
        assert self.last_audit_id() == before
        lines = [line for line in result.stdout.splitlines() if line.startswith("│")]
        return [[cell.strip() for cell in line.strip("│").split("│")] for line in lines]


@pytest.fixture
def cli(db_url: str) -> Iterator[Cli]:
    engine = create_engine(db_url)
    upgrade(engine, side="platform")
    yield Cli({"CONTACTSYNC_DATABASE_URL": db_url}, engine)
    engine.dispose()


def one_password(result: Result) -> str:
    """The one-time password: alone on stdout, explained (but not repeated) on stderr."""
    password = result.stdout.strip()
    assert result.stdout == password + "\n"
    assert len(password) >= 12
    assert "shown once" in result.stderr
    assert password not in result.stderr
    return password


def signs_in(cli: Cli, email: str, password: str) -> bool:
    with cli.engine.connect() as conn:
        return people.authenticate(conn, email, password) is not None


def user_id(cli: Cli, email: str) -> int:
    with cli.engine.connect() as conn:
        found = people.find_user(conn, email)
    assert found is not None
    return found.id


def account_named(cli: Cli, name: str) -> int:
    with cli.engine.connect() as conn:
        (found,) = [a.id for a in people.list_accounts(conn) if a.name == name]
    return found


def session_of(cli: Cli, email: str, account_id: int) -> str:
    """A platform UI session of the user, working in ``account_id``, as the login makes one."""
    token, now, principal = uuid.uuid4().hex, utc_now(), people.principal_of(user_id(cli, email))
    with cli.engine.begin() as conn:
        conn.execute(
            admin_sessions.insert().values(
                id=token,
                principal=principal,
                csrf="csrf",
                password_tag="tag",
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(hours=1),
                account_id=account_id,
            )
        )
    return token


def session_alive(cli: Cli, token: str) -> bool:
    with cli.engine.connect() as conn:
        return (
            conn.execute(sa.select(admin_sessions.c.id).where(admin_sessions.c.id == token)).first()
            is not None
        )


# --- accounts --------------------------------------------------------------------------------------


def test_accounts_create_prints_a_new_owners_password_once_and_lists_members(cli: Cli) -> None:
    result, row = cli.audited("accounts", "create", "Acme", "--owner", "Ann@Example.com")
    password = one_password(result)
    acme = account_named(cli, "Acme")
    assert (row.action, row.account_id, row.target_type, row.target_id) == (
        "account.create",
        acme,
        "account",
        str(acme),
    )
    assert row.detail == {"name": "Acme", "owner": "ann@example.com"}
    assert signs_in(cli, "ann@example.com", password)

    # an existing user becomes the owner of another account: no password to hand over
    again, row = cli.audited("accounts", "create", "Beta", "--owner", "ann@example.com")
    assert again.stdout == ""
    assert row.detail["owner"] == "ann@example.com"
    alone, _row = cli.audited("accounts", "create", "Gamma")
    assert alone.stdout == ""
    assert "created account" in alone.stderr

    listed = cli.table("accounts", "list")
    assert [(r[1], r[4]) for r in listed] == [("Acme", "1"), ("Beta", "1"), ("Gamma", "0")]
    assert all(r[3] == "" for r in listed)  # none suspended
    assert cli.table("accounts", "members", str(acme)) == [
        [str(user_id(cli, "ann@example.com")), "ann@example.com", "owner", listed[0][2]]
    ]
    assert password not in cli.run("users", "list").stdout

    assert "an account needs a name" in cli.fails("accounts", "create", "  ")
    assert "not an email" in cli.fails("accounts", "create", "Delta", "--owner", "nobody")
    assert [r[1] for r in cli.table("accounts", "list")] == ["Acme", "Beta", "Gamma"]  # Delta rolled back
    assert "account 999 does not exist" in cli.fails("accounts", "members", "999")


def test_accounts_suspend_ends_members_sessions_and_reactivate_lets_them_in(cli: Cli) -> None:
    cli.audited("accounts", "create", "Acme", "--owner", "ann@example.com")
    acme = account_named(cli, "Acme")
    session = session_of(cli, "ann@example.com", acme)

    result, row = cli.audited("accounts", "suspend", str(acme))
    assert "suspended account" in result.stdout
    assert (row.action, row.account_id, row.target_id) == ("account.suspend", acme, str(acme))
    assert not session_alive(cli, session)
    assert cli.table("accounts", "list")[0][3] != ""
    with cli.engine.connect() as conn:
        assert people.get_account(conn, acme).suspended_at is not None

    _result, row = cli.audited("accounts", "reactivate", str(acme))
    assert row.action == "account.reactivate"
    with cli.engine.connect() as conn:
        assert people.get_account(conn, acme).suspended_at is None
    assert cli.table("accounts", "list")[0][3] == ""

    assert "account 999 does not exist" in cli.fails("accounts", "suspend", "999")
    assert "account 999 does not exist" in cli.fails("accounts", "reactivate", "999")


# --- users -----------------------------------------------------------------------------------------


def test_users_create_with_a_made_up_or_a_given_password(cli: Cli) -> None:
    result, row = cli.audited("users", "create", "Bob@Example.com")
    password = one_password(result)
    bob = user_id(cli, "bob@example.com")
    assert (row.action, row.account_id, row.target_type, row.target_id) == (
        "user.create",
        None,
        "user",
        str(bob),
    )
    assert row.detail == {"email": "bob@example.com", "operator": False}
    assert signs_in(cli, "bob@example.com", password)

    given, row = cli.audited(
        "users", "create", "op@example.com", "--operator", "--password-stdin", stdin="correct horse battery\n"
    )
    assert given.stdout == ""
    assert row.detail == {"email": "op@example.com", "operator": True}
    assert signs_in(cli, "op@example.com", "correct horse battery")
    assert not signs_in(cli, "op@example.com", "correct horse battery\n")

    listed = {r[1]: r for r in cli.table("users", "list")}
    assert listed["op@example.com"][2] == "yes"
    assert listed["bob@example.com"][2] == ""

    assert "exists" in cli.fails("users", "create", "BOB@example.com")
    assert "at least 8" in cli.fails("users", "create", "c@example.com", "--password-stdin", stdin="short\n")
    assert "no password" in cli.fails("users", "create", "c@example.com", "--password-stdin", stdin="")
    assert "not an email" in cli.fails("users", "create", "c.example.com")
    assert sorted(listed) == sorted(r[1] for r in cli.table("users", "list"))


def test_members_are_added_re_roled_and_removed_and_the_last_owner_stays(cli: Cli) -> None:
    cli.audited("accounts", "create", "Acme", "--owner", "own@example.com")
    cli.audited("accounts", "create", "Beta")
    acme, beta = account_named(cli, "Acme"), account_named(cli, "Beta")

    added, row = cli.audited("users", "add", "ed@example.com", "--account", str(acme), "--role", "editor")
    password = one_password(added)
    ed = user_id(cli, "ed@example.com")
    assert (row.action, row.account_id, row.target_id) == ("member.add", acme, str(ed))
    assert row.detail == {"email": "ed@example.com", "role": "editor", "new_user": True}
    assert signs_in(cli, "ed@example.com", password)
    known, row = cli.audited("users", "add", "ED@example.com", "--account", str(beta), "--role", "viewer")
    assert known.stdout == ""
    assert "is viewer in account" in known.stderr
    assert row.detail["new_user"] is False
    assert {r[1]: r[2] for r in cli.table("accounts", "members", str(acme))} == {
        "ed@example.com": "editor",
        "own@example.com": "owner",
    }
    assert cli.table("users", "list")[1][5] == f"{acme}:editor {beta}:viewer"

    assert "already a member" in cli.fails(
        "users", "add", "ed@example.com", "--account", str(acme), "--role", "viewer"
    )
    assert "account 999 does not exist" in cli.fails(
        "users", "add", "new@example.com", "--account", "999", "--role", "viewer"
    )
    assert "new@example.com" not in cli.run("users", "list").stdout  # rolled back with the membership
    assert "role must be one of viewer, editor, owner" in cli.fails(
        "users", "add", "new@example.com", "--account", str(acme), "--role", "admin"
    )
    assert "role must be one of" in cli.fails(
        "users", "role", "ed@example.com", "--account", str(acme), "--role", "god"
    )

    changed, row = cli.audited("users", "role", "ed@example.com", "--account", str(acme), "--role", "owner")
    assert changed.stdout.strip() == f"ed@example.com is owner in account {acme}"
    assert (row.action, row.account_id, row.detail) == (
        "member.role",
        acme,
        {"email": "ed@example.com", "role": "owner"},
    )

    # Beta's only owner cannot be demoted nor removed
    cli.audited("users", "role", "ed@example.com", "--account", str(beta), "--role", "owner")
    assert "last owner" in cli.fails(
        "users", "role", "ed@example.com", "--account", str(beta), "--role", "editor"
    )
    assert "last owner" in cli.fails("users", "remove", "ed@example.com", "--account", str(beta))

    session = session_of(cli, "ed@example.com", acme)
    elsewhere = session_of(cli, "ed@example.com", beta)
    removed, row = cli.audited("users", "remove", "ed@example.com", "--account", str(acme))
    assert "removed ed@example.com" in removed.stdout
    assert (row.action, row.account_id, row.detail) == ("member.remove", acme, {"email": "ed@example.com"})
    assert not session_alive(cli, session)
    assert session_alive(cli, elsewhere)  # their work in another account goes on
    assert [r[1] for r in cli.table("accounts", "members", str(acme))] == ["own@example.com"]

    assert "not a member" in cli.fails("users", "remove", "ed@example.com", "--account", str(acme))
    assert "no user has the email nobody@example.com" in cli.fails(
        "users", "role", "nobody@example.com", "--account", str(acme), "--role", "viewer"
    )
    assert "account 999 does not exist" in cli.fails("users", "remove", "own@example.com", "--account", "999")


def test_set_password_disable_and_enable_end_sessions(cli: Cli) -> None:
    cli.audited("accounts", "create", "Acme", "--owner", "ann@example.com")
    acme = account_named(cli, "Acme")
    first = cli.run("accounts", "list")  # (a read; the password came with the account)
    assert first.exit_code == 0
    session = session_of(cli, "ann@example.com", acme)

    reset, row = cli.audited("users", "set-password", "ANN@example.com")
    password = one_password(reset)
    assert (row.action, row.account_id, row.target_id) == (
        "user.reset_password",
        None,
        str(user_id(cli, "ann@example.com")),
    )
    assert row.detail == {"email": "ann@example.com", "generated": True}
    assert signs_in(cli, "ann@example.com", password)
    assert not session_alive(cli, session)

    given, row = cli.audited(
        "users", "set-password", "ann@example.com", "--password-stdin", stdin="a brand new secret\n"
    )
    assert given.stdout == ""
    assert row.detail["generated"] is False
    assert signs_in(cli, "ann@example.com", "a brand new secret")
    assert not signs_in(cli, "ann@example.com", password)

    session = session_of(cli, "ann@example.com", acme)
    disabled, row = cli.audited("users", "disable", "ann@example.com")
    assert "disabled ann@example.com" in disabled.stdout
    assert row.action == "user.disable"
    assert not session_alive(cli, session)
    assert not signs_in(cli, "ann@example.com", "a brand new secret")
    assert cli.table("users", "list")[0][4] != ""
    _enabled, row = cli.audited("users", "enable", "ann@example.com")
    assert row.action == "user.enable"
    assert signs_in(cli, "ann@example.com", "a brand new secret")

    cli.audited("users", "create", "op@example.com", "--operator")
    assert "last active operator" in cli.fails("users", "disable", "op@example.com")
    assert "no user has the email" in cli.fails("users", "set-password", "nobody@example.com")
    assert "no user has the email" in cli.fails("users", "enable", "nobody@example.com")
    assert "at least 8" in cli.fails(
        "users", "set-password", "ann@example.com", "--password-stdin", stdin="x\n"
    )
    assert signs_in(cli, "ann@example.com", "a brand new secret")


# --- the existing mutating commands ------------------------------------------------------------------


@pytest.fixture
def platform(cli: Cli) -> dict[str, Any]:
    rt = Runtime.create(Settings(database_url=cli.env["CONTACTSYNC_DATABASE_URL"]), engine=cli.engine)
    return manual_automation(cli.engine, rt)


def test_every_mutating_command_writes_one_audit_row(
    cli: Cli, platform: dict[str, Any], tmp_path: Path
) -> None:
    account = platform["account"]
    people_csv = tmp_path / "p.csv"
    people_csv.write_text("email,City\n" + "".join(f"p{i}@example.com,Town {i}\n" for i in range(5)))
    result, row = cli.audited("import", str(people_csv), "--list", str(platform["list"]))
    assert json.loads(result.stdout)["created"] == 5
    assert (row.action, row.account_id, row.target_type, row.target_id) == (
        "contact.import",
        account,
        "list",
        str(platform["list"]),
    )
    assert row.detail == {"rows": 5, "created": 5, "updated": 0, "unchanged": 0, "deliveries": 0}
    assert "list 999" in cli.fails("import", str(people_csv), "--list", "999")

    result, row = cli.audited("automations", "run", str(platform["automation"]), "--chunk-size", "2")
    run = json.loads(result.stdout)
    assert run["enqueued"] == 5
    assert (row.action, row.account_id, row.target_type, row.target_id) == (
        "run.start",
        account,
        "run",
        str(run["id"]),
    )
    assert row.detail == {"automation_id": platform["automation"], "resumed": False}
    assert "automation 999" in cli.fails("automations", "run", "999")

    with cli.engine.begin() as conn:  # as if every attempt had failed
        conn.execute(deliveries.update().values(state="failed", attempt_count=8))
        ids = list(conn.execute(sa.select(deliveries.c.id).order_by(deliveries.c.id)).scalars())
    result, row = cli.audited("deliveries", "retry", str(ids[1]), str(ids[0]))
    assert json.loads(result.stdout) == {"requested": 2, "queued": 2}
    assert (row.action, row.account_id, row.target_type) == ("delivery.retry", account, "delivery")
    assert row.detail == {"ids": ids[:2], "requested": 2}

    result, row = cli.audited(
        "deliveries", "recover", "--action", str(platform["action"]), "--since", "2020-01-01"
    )
    assert json.loads(result.stdout) == {"failed": 3, "queued": 3}
    assert (row.action, row.account_id, row.target_id) == ("action.recover", account, str(platform["action"]))
    assert row.detail["failed"] == 3
    assert "action 999" in cli.fails("deliveries", "recover", "--action", "999", "--since", "2020-01-01")

    result, row = cli.audited("keys", "create", "--name", "ci", "--account", str(account), "--role", "viewer")
    assert result.stdout.startswith("csk_")
    assert (row.action, row.account_id, row.detail) == (
        "key.create",
        account,
        {"name": "ci", "role": "viewer"},
    )
    _result, row = cli.audited("keys", "revoke", row.target_id or "")
    assert (row.action, row.account_id) == ("key.revoke", account)

    result, row = cli.audited("secrets", "rotate-key")
    assert (row.action, row.account_id, row.target_type) == ("secrets.rotate_key", None, "installation")
    assert row.detail["rows"] >= 1  # the action's secret, and the deliveries' frozen signing secrets


def test_serve_sealing_credentials_stored_in_clear_is_audited_once(
    cli: Cli, platform: dict[str, Any]
) -> None:
    from contactsync.api.commands import seal_plaintext
    from contactsync.db.platform import actions

    rt = Runtime.create(Settings(database_url=cli.env["CONTACTSYNC_DATABASE_URL"]), engine=cli.engine)
    with cli.engine.begin() as conn:  # as stored before sealing existed
        conn.execute(actions.update().values(secret="whsec_" + "A" * 32))
    before = cli.last_audit_id()
    seal_plaintext(cli.engine, rt)
    (row,) = cli.audit_since(before)
    assert (row.action, row.account_id, row.target_type, row.actor_kind) == (
        "secrets.seal",
        None,
        "installation",
        "cli",
    )
    assert row.detail == {"rows": 1}
    seal_plaintext(cli.engine, rt)  # nothing left in clear: no change, no row
    assert cli.last_audit_id() == row.id


@pytest.mark.parametrize(
    "command",
    [
        ["accounts", "list"],
        ["accounts", "create"],
        ["accounts", "suspend"],
        ["accounts", "reactivate"],
        ["accounts", "members"],
        ["users", "list"],
        ["users", "create"],
        ["users", "add"],
        ["users", "role"],
        ["users", "remove"],
        ["users", "set-password"],
        ["users", "disable"],
        ["users", "enable"],
    ],
)
def test_every_people_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
