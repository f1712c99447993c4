"""``contactsync accounts`` and ``contactsync users``: an installation's accounts and people, on its server.

Whoever can run the CLI on the server can read the database anyway, so these commands need no
sign-in; they act as the operator and each change writes one audit row, actor ``cli:<os user>``, in
the change's own transaction. A password made up for someone (a new user's, or a reset) is printed
alone on stdout — ``PW=$(contactsync users create ann@example.com)`` — and what it is on stderr; only
its argon2 hash is stored, so it is never shown again. Errors are one ``error: …`` line, exit code 1.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from contactsync.cli_ops import one_line_errors
from contactsync.errors import NotFoundError, ValidationError
from contactsync.tenancy import people
from contactsync.tenancy.audit import Actor, record
from contactsync.tenancy.roles import ROLES, Role, parse_role

accounts_app = typer.Typer(
    help="Accounts: create, suspend (keys, members and deliveries held) and reactivate them.",
    no_args_is_help=True,
)
users_app = typer.Typer(
    help="Users: people who sign in with email and password, and their roles in accounts.",
    no_args_is_help=True,
)
err = Console(stderr=True)

ROLE_HELP = f"{', '.join(ROLES)} (viewer reads; editor changes data; owner also members, keys, secrets)."


# --- plumbing ------------------------------------------------------------------------------------


@contextmanager
def _connection(*, write: bool) -> Iterator[tuple[sa.Connection, datetime]]:
    """A connection to the migrated platform database (a transaction when ``write``) and the time now;
    the package's errors become one stderr line."""
    from contactsync.api.commands import migrated_engine
    from contactsync.automation.runtime import utc_now

    with one_line_errors():
        _settings, engine = migrated_engine()
        try:
            if write:
                with engine.begin() as conn:
                    yield conn, utc_now()
            else:
                with engine.connect() as conn:
                    yield conn, utc_now()
        finally:
            engine.dispose()


def _audit(
    conn: sa.Connection,
    action: str,
    *,
    account_id: int | None,
    target: tuple[str, int],
    now: datetime,
    **detail: object,
) -> None:
    kind, ident = target
    record(conn, Actor.cli(), action, account_id=account_id, target_type=kind, target_id=ident, now=now,
           detail=detail)  # fmt: skip


def _user(conn: sa.Connection, email: str) -> people.UserOut:
    found = people.find_user(conn, email)
    if found is None:
        raise NotFoundError(f"no user has the email {people.normalize_email(email)}", field="email")
    return found


def _password_from_stdin() -> str:
    """The password on stdin, without its final newline (``printf %s "$PW" |`` or ``echo "$PW" |``)."""
    password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not password:
        raise ValidationError("--password-stdin: stdin holds no password", field="password")
    return password


def _hand_over(password: str | None, whose: str) -> None:
    """Print a made-up password alone on stdout, once; say on stderr what it is."""
    if password is None:
        return
    _note(f"one-time password of {whose} below: shown once, hand it over now")
    typer.echo(password)


def _note(text: str) -> None:
    """What happened, on stderr (stdout is kept for a password)."""
    err.print(text, markup=False, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    """Rich on a terminal; piped, rows as long as their content, so ``grep`` sees whole emails."""
    console = Console()
    return console if console.is_terminal else Console(width=10_000)


def _when(at: datetime | None) -> str:
    return "" if at is None else f"{at:%Y-%m-%d %H:%M}"


# --- accounts ------------------------------------------------------------------------------------


@accounts_app.command("list")
def accounts_list() -> None:
    """Every account: id, name, creation, suspension and how many members it has."""
    from contactsync.db.platform import memberships

    m = memberships.c
    with _connection(write=False) as (conn, _now):
        found = people.list_accounts(conn)
        grouped = sa.select(m.account_id, sa.func.count()).group_by(m.account_id)
        counts: dict[int, int] = {int(a): int(n) for a, n in conn.execute(grouped)}
    table = Table("id", "name", "created", "suspended", "members")
    for account in found:
        table.add_row(
            str(account.id),
            Text(account.name),
            _when(account.created_at),
            _when(account.suspended_at),
            str(counts.get(account.id, 0)),
        )
    _stdout().print(table)


@accounts_app.command("create")
def accounts_create(
    name: str = typer.Argument(..., help="The account's name (a team or a customer)."),
    owner: str | None = typer.Option(
        None, "--owner", help="Email of its first owner (created with a one-time password if new)."
    ),
) -> None:
    """Create an account; with --owner, its first owner's one-time password (if new) goes to stdout."""
    with _connection(write=True) as (conn, now):
        account = people.create_account(conn, name=name, now=now)
        member, password = None, None
        if owner is not None:
            member, password = people.add_member(conn, account.id, email=owner, role=Role.OWNER, now=now)
        _audit(conn, "account.create", account_id=account.id, target=("account", account.id), now=now,
               name=account.name, owner=None if member is None else member.email)  # fmt: skip
    whose = "" if member is None else f", owner {member.email}" + (" (new user)" if password else "")
    _note(f"created account {account.id} ({account.name}){whose}")
    if member is not None:
        _hand_over(password, member.email)


def _suspension(account_id: int, *, suspended: bool) -> people.AccountOut:
    from contactsync.delivery import outbox

    with _connection(write=True) as (conn, now):
        account = people.set_suspended(conn, account_id, suspended=suspended, now=now)
        action = "account.suspend" if suspended else "account.reactivate"
        _audit(conn, action, account_id=account_id, target=("account", account_id), now=now)
        if not suspended:
            outbox.notify(conn)  # its held deliveries are due again: wake idle dispatchers
    return account


@accounts_app.command("suspend")
def accounts_suspend(account_id: int = typer.Argument(..., help="Id from `accounts list`.")) -> None:
    """Refuse the account's keys and members at once and hold its deliveries (nothing is dropped)."""
    account = _suspension(account_id, suspended=True)
    typer.echo(f"suspended account {account.id} ({account.name}): its keys and members are refused, "
         "its deliveries wait")  # fmt: skip


@accounts_app.command("reactivate")
def accounts_reactivate(account_id: int = typer.Argument(..., help="Id from `accounts list`.")) -> None:
    """Let the account's keys and members in again; its held deliveries go out."""
    account = _suspension(account_id, suspended=False)
    typer.echo(f"reactivated account {account.id} ({account.name})")


@accounts_app.command("members")
def accounts_members(account_id: int = typer.Argument(..., help="Id from `accounts list`.")) -> None:
    """The account's members: user id, email, role and since when."""
    with _connection(write=False) as (conn, _now):
        people.get_account(conn, account_id)
        members = people.list_members(conn, account_id)
    table = Table("user", "email", "role", "since")
    for member in members:
        table.add_row(str(member.user_id), Text(member.email), member.role.value, _when(member.created_at))
    _stdout().print(table)


# --- users ---------------------------------------------------------------------------------------


@users_app.command("list")
def users_list() -> None:
    """Every user: id, email, operator, creation, disabling, and their roles by account."""
    from contactsync.db.platform import memberships

    m = memberships.c
    with _connection(write=False) as (conn, _now):
        found = people.list_users(conn)
        rows = conn.execute(sa.select(m.user_id, m.account_id, m.role).order_by(m.user_id, m.account_id))
        places: dict[int, list[str]] = {}
        for row in rows:
            places.setdefault(row.user_id, []).append(f"{row.account_id}:{row.role}")
    table = Table("id", "email", "operator", "created", "disabled", "accounts (id:role)")
    for user in found:
        table.add_row(
            str(user.id),
            Text(user.email),
            "yes" if user.operator else "",
            _when(user.created_at),
            _when(user.disabled_at),
            " ".join(places.get(user.id, [])),
        )
    _stdout().print(table)


@users_app.command("create")
def users_create(
    email: str = typer.Argument(..., help="Their sign-in email."),
    operator: bool = typer.Option(
        False, "--operator", help="An operator: creates and suspends accounts, sees every account."
    ),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from stdin (default: make one up, print it once)."
    ),
) -> None:
    """Create a user (in no account yet: `users add`); a made-up password goes to stdout, once."""
    given = _read_password() if password_stdin else None
    with _connection(write=True) as (conn, now):
        user, password = people.create_user(conn, email=email, password=given, now=now, operator=operator)
        _audit(conn, "user.create", account_id=None, target=("user", user.id), now=now,
               email=user.email, operator=user.operator)  # fmt: skip
    what = "operator" if user.operator else "user"
    _note(f"created {what} {user.id} ({user.email})")
    _hand_over(password, user.email)


def _read_password() -> str:
    with one_line_errors():
        return _password_from_stdin()


def _role(text: str) -> Role:
    with one_line_errors():
        return parse_role(text.strip().lower())


@users_app.command("add")
def users_add(
    email: str = typer.Argument(..., help="Their email (a new user gets a one-time password)."),
    account: int = typer.Option(..., "--account", help="Account id."),
    role: str = typer.Option(..., "--role", help=ROLE_HELP),
) -> None:
    """Make someone a member of an account with a role; someone new gets a password, printed once."""
    wanted = _role(role)
    with _connection(write=True) as (conn, now):
        member, password = people.add_member(conn, account, email=email, role=wanted, now=now)
        _audit(conn, "member.add", account_id=account, target=("user", member.user_id), now=now,
               email=member.email, role=member.role.value, new_user=password is not None)  # fmt: skip
    new = " (new user)" if password else ""
    _note(f"{member.email}{new} is {member.role.value} in account {account}")
    _hand_over(password, member.email)


@users_app.command("role")
def users_role(
    email: str = typer.Argument(..., help="A member's email."),
    account: int = typer.Option(..., "--account", help="Account id."),
    role: str = typer.Option(..., "--role", help=ROLE_HELP),
) -> None:
    """Change a member's role (the account's last owner stays one); effective on their next request."""
    wanted = _role(role)
    with _connection(write=True) as (conn, now):
        people.get_account(conn, account)
        member = people.change_role(conn, account, _user(conn, email).id, wanted)
        _audit(conn, "member.role", account_id=account, target=("user", member.user_id), now=now,
               email=member.email, role=member.role.value)  # fmt: skip
    typer.echo(f"{member.email} is {member.role.value} in account {account}")


@users_app.command("remove")
def users_remove(
    email: str = typer.Argument(..., help="A member's email."),
    account: int = typer.Option(..., "--account", help="Account id."),
) -> None:
    """Remove a member from an account (not the last owner); their sessions there end at once."""
    with _connection(write=True) as (conn, now):
        people.get_account(conn, account)
        member = people.remove_member(conn, account, _user(conn, email).id)
        _audit(conn, "member.remove", account_id=account, target=("user", member.user_id), now=now,
               email=member.email)  # fmt: skip
    typer.echo(f"removed {member.email} from account {account}; their sessions there ended")


@users_app.command("set-password")
def users_set_password(
    email: str = typer.Argument(..., help="The user's email."),
    password_stdin: bool = typer.Option(
        False,
        "--password-stdin",
        help="Read the new password from stdin (default: make one up, print it once).",
    ),
) -> None:
    """Give a user a new password (made up and printed once, or from stdin); their sessions end."""
    given = _read_password() if password_stdin else None
    with _connection(write=True) as (conn, now):
        user = _user(conn, email)
        password = people.set_password(conn, user.id, given)
        _audit(conn, "user.reset_password", account_id=None, target=("user", user.id), now=now,
               email=user.email, generated=password is not None)  # fmt: skip
    _note(f"new password for {user.email}; their sessions ended")
    _hand_over(password, user.email)


def _disabled(email: str, *, disabled: bool) -> people.UserOut:
    with _connection(write=True) as (conn, now):
        user = people.set_disabled(conn, _user(conn, email).id, disabled=disabled, now=now)
        action = "user.disable" if disabled else "user.enable"
        _audit(conn, action, account_id=None, target=("user", user.id), now=now, email=user.email)
    return user


@users_app.command("disable")
def users_disable(email: str = typer.Argument(..., help="The user's email.")) -> None:
    """Refuse the user's sign-in and end their sessions now (memberships are kept)."""
    user = _disabled(email, disabled=True)
    typer.echo(f"disabled {user.email}; their sessions ended")


@users_app.command("enable")
def users_enable(email: str = typer.Argument(..., help="The user's email.")) -> None:
    """Let a disabled user sign in again."""
    user = _disabled(email, disabled=False)
    typer.echo(f"enabled {user.email}")


def register(app: typer.Typer) -> None:
    """Add ``accounts`` and ``users`` to the root CLI."""
    app.add_typer(accounts_app, name="accounts")
    app.add_typer(users_app, name="users")
