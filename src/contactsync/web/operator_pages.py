"""The operator's pages: every account (create, suspend, reactivate, enter), every user (disable,
enable, new password) and the troubled endpoints of every account.

Only the installation's operator sees them. Suspending an account ends its members' sessions at
once and holds its deliveries until it is reactivated (the operator's own sessions are kept, and the
operator may still enter it). A one-time password (a new account's new owner, a reset) is shown on
the page that answers the form and never again. Each change is audited in the account it concerns,
or installation-wide for a user. Accounts and users are listed newest first, each paged by id.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.db.platform import accounts, memberships, users
from contactsync.errors import ConflictError, NotFoundError, ValidationError
from contactsync.tenancy import people
from contactsync.tenancy.audit import record
from contactsync.tenancy.roles import OPERATOR, Role
from contactsync.web import paging, stats
from contactsync.web.app import Web
from contactsync.web.platform_pages import form_text, utcnow
from contactsync.web.security import Session


def routes(web: Web) -> list[BaseRoute]:
    def wake() -> None:
        if web.wiring.on_enqueue is not None:
            web.wiring.on_enqueue()

    async def overview(
        request: Request, session: Session, *, status: int = 200, shown: Any = None, problem: str = ""
    ) -> Response:
        get = request.method == "GET"
        at_accounts = paging.seek(request, prefix="accounts_") if get else paging.Seek()
        at_users = paging.seek(request, prefix="users_") if get else paging.Seek()

        def cursors(prefix: str) -> dict[str, str]:  # one list's place, kept in the other's links
            return {k: v for k, v in request.query_params.items() if k.startswith(prefix)} if get else {}

        def load(conn: sa.Connection) -> dict[str, Any]:
            a, u, m = accounts.c, users.c, memberships.c
            everyone = sa.select(u.id, u.email, u.operator, u.created_at, u.disabled_at)  # no password hash
            shown_accounts = paging.window(
                lambda seek, n: conn.execute(paging.past(sa.select(accounts), a.id, seek, n)).all(),
                at_accounts,
                key=lambda r: r.id,
                params=cursors("users_"),
                prefix="accounts_",
            )
            shown_users = paging.window(
                lambda seek, n: conn.execute(paging.past(everyone, u.id, seek, n)).all(),
                at_users,
                key=lambda r: r.id,
                params=cursors("accounts_"),
                prefix="users_",
            )
            counts: dict[int, int] = dict(
                conn.execute(
                    sa.select(m.account_id, sa.func.count())
                    .where(m.account_id.in_([r.id for r in shown_accounts.rows]))
                    .group_by(m.account_id)
                ).all()
            )
            return {
                "accounts": shown_accounts.rows,
                "accounts_page": shown_accounts,
                "members": counts,
                "users": shown_users.rows,
                "users_page": shown_users,
                "endpoints": stats.troubled_endpoints(conn, account_id=None),
                "events": stats.endpoint_news(conn, account_id=None, limit=20),
            }

        data = await web.read(load)
        return web.render(
            request, session, "platform/operator.html", status, shown=shown, problem=problem, **data
        )

    async def index(request: Request, session: Session) -> Response:
        return await overview(request, session)

    async def account_create(request: Request, session: Session) -> Response:
        """A new account; with an owner's email, its first owner (a new user gets a one-time password)."""
        form = await request.form()
        who = session.who
        owner_email = form_text(form, "owner_email")

        def create(conn: sa.Connection) -> tuple[people.AccountOut, str | None]:
            now = utcnow()
            account = people.create_account(conn, name=form_text(form, "name"), now=now)
            password = None
            if owner_email:
                _, password = people.add_member(conn, account.id, email=owner_email, role=Role.OWNER, now=now)
            detail = {"name": account.name, "owner": owner_email or None}
            record(conn, who.actor, "account.create", account_id=account.id, target_type="account",
                   target_id=account.id, now=now, detail=detail)  # fmt: skip
            return account, password

        try:
            account, password = await web.write(create)
        except NotFoundError:
            raise
        except (ValidationError, ConflictError) as exc:
            return await overview(request, session, status=400, problem=str(exc))
        shown = {"what": f"account {account.name} created", "email": owner_email, "password": password}
        return await overview(request, session, shown=shown)

    def suspension(*, suspended: bool) -> Any:
        async def handler(request: Request, session: Session) -> Response:
            account_id = int(request.path_params["account_id"])
            who = session.who

            def change(conn: sa.Connection) -> people.AccountOut:
                now = utcnow()
                account = people.set_suspended(conn, account_id, suspended=suspended, now=now)
                action = "account.suspend" if suspended else "account.reactivate"
                record(conn, who.actor, action, account_id=account_id, target_type="account",
                       target_id=account_id, now=now)  # fmt: skip
                return account

            account = await web.write(change)
            if not suspended:
                wake()  # its held deliveries are due again
            verb = "suspended; its members' sessions have ended" if suspended else "reactivated"
            return web.redirect(request, "/operator", msg=f"account {account.name} {verb}")

        return handler

    def user_state(*, disabled: bool) -> Any:
        async def handler(request: Request, session: Session) -> Response:
            user_id = int(request.path_params["user_id"])
            who = session.who

            def change(conn: sa.Connection) -> people.UserOut:
                now = utcnow()
                user = people.set_disabled(conn, user_id, disabled=disabled, now=now)
                action = "user.disable" if disabled else "user.enable"
                record(
                    conn, who.actor, action, account_id=None, target_type="user", target_id=user_id, now=now
                )
                return user

            try:
                user = await web.write(change)
            except NotFoundError:
                raise
            except ConflictError as exc:
                return web.redirect(request, "/operator", err=str(exc))
            verb = "disabled; their sessions have ended" if disabled else "enabled"
            return web.redirect(request, "/operator", msg=f"{user.email} {verb}")

        return handler

    async def password_reset(request: Request, session: Session) -> Response:
        """A new one-time password for a user (shown once here); their sessions end."""
        user_id = int(request.path_params["user_id"])
        who = session.who
        if user_id == who.user_id:  # the new password would end this very session, unseen
            return web.redirect(request, "/operator", err="change your own password on its own page")

        def reset(conn: sa.Connection) -> tuple[str, str | None]:
            password = people.set_password(conn, user_id, None)
            record(conn, who.actor, "user.reset_password", account_id=None, target_type="user",
                   target_id=user_id, now=utcnow())  # fmt: skip
            return people.get_user(conn, user_id).email, password

        email, password = await web.write(reset)
        shown = {"what": f"new password for {email}", "email": email, "password": password}
        return await overview(request, session, shown=shown)

    return [
        web.page("/operator", index, role=OPERATOR),
        web.page("/operator/accounts", account_create, methods=["POST"], role=OPERATOR),
        web.page(
            "/operator/accounts/{account_id:int}/suspend",
            suspension(suspended=True),
            methods=["POST"],
            role=OPERATOR,
        ),
        web.page(
            "/operator/accounts/{account_id:int}/reactivate",
            suspension(suspended=False),
            methods=["POST"],
            role=OPERATOR,
        ),
        web.page(
            "/operator/users/{user_id:int}/disable",
            user_state(disabled=True),
            methods=["POST"],
            role=OPERATOR,
        ),
        web.page(
            "/operator/users/{user_id:int}/enable",
            user_state(disabled=False),
            methods=["POST"],
            role=OPERATOR,
        ),
        web.page(
            "/operator/users/{user_id:int}/reset-password", password_reset, methods=["POST"], role=OPERATOR
        ),
    ]
