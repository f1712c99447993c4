"""Signing in and out of the admin UIs, the platform's account switcher and a user's own password.

The listener has one admin password (principal ``admin``). On the platform people sign in with
their email and password (:func:`contactsync.tenancy.people.authenticate`) and land in their first
account that is not suspended; the operator with no account lands on the operator page. Failed
sign-ins are rate limited per client address either way. Signing in or out and switching account
change no data, so they leave no audit row; a new password does.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from contactsync.errors import NotFoundError, ValidationError
from contactsync.tenancy import audit, people
from contactsync.web.app import Web, forbidden
from contactsync.web.identity import SIGNED_IN, first_place
from contactsync.web.security import CSRF_FIELD, Session, csrf_ok

NO_ACCOUNT = "You are not a member of any active account; ask one of its owners to add you."


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _safe_next(target: str) -> str:
    """Only same-app paths: never redirect a login to another host."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def routes(web: Web) -> list[BaseRoute]:
    def sign_in(email: str, password: str) -> tuple[people.UserOut | None, int | None]:
        """The user of these credentials (or None) and the account they land in."""
        with web.engine.connect() as conn:
            user = people.authenticate(conn, email, password)
            if user is None:
                return None, None
            return user, first_place(people.places(conn, user))

    async def login_form(request: Request) -> Response:
        session = await web.session_of(request)
        if session is not None and session.authenticated:
            return web.redirect(request, "/")
        return web.render(
            request, session or web.codec.new(), "login.html", next=request.query_params.get("next", "")
        )

    async def login(request: Request) -> Response:
        session = await web.session_of(request)
        form = await request.form()
        offered = form.get(CSRF_FIELD)
        if not csrf_ok(session, offered if isinstance(offered, str) else None):
            return forbidden(request)
        assert session is not None
        client = request.client.host if request.client else "?"
        wait_s = web.limiter.blocked(client)
        if wait_s:
            response = web.render(
                request,
                session,
                "login.html",
                429,
                next="",
                problem=f"Too many attempts; wait {int(wait_s)} s.",
            )
            response.headers["retry-after"] = str(int(wait_s))
            return response
        password = _text(form, "password")
        next_ = _text(form, "next")
        if web.side == "platform":
            user, account_id = await run_in_threadpool(sign_in, _text(form, "email"), password)
            principal = people.principal_of(user.id) if user is not None else ""
            problem = "Wrong email or password."
        else:
            check = web.password
            ok = check is not None and await run_in_threadpool(check.verify, password)
            user, account_id, principal = None, None, "admin" if ok else ""
            problem = "Wrong password."
        if not principal:
            web.limiter.failed(client)
            email = _text(form, "email")
            return web.render(request, session, "login.html", 401, next=next_, problem=problem, email=email)
        web.limiter.succeeded(client)
        if user is not None and account_id is None and not user.operator:
            return web.render(request, session, "login.html", 403, next=next_, problem=NO_ACCOUNT)
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(_safe_next(next_ or base + "/"), status_code=303)
        token, _ = await run_in_threadpool(lambda: web.sessions.create(principal, account_id=account_id))
        web.set_cookie(request, response, token, max_age_s=web.sessions.absolute_s)
        return response

    async def logout(request: Request, session: Session) -> Response:
        await run_in_threadpool(web.sessions.end, session)  # a copy of the cookie stops working too
        response = web.redirect(request, "/login")
        visitor = web.codec.new()
        web.set_cookie(request, response, web.codec.dump(visitor), max_age_s=web.codec.max_age_s)
        return response

    found: list[BaseRoute] = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        web.page("/logout", logout, methods=["POST"], role=SIGNED_IN if web.side == "platform" else None),
    ]
    if web.side == "platform":
        found += _platform_routes(web)
    return found


def _platform_routes(web: Web) -> list[BaseRoute]:
    async def switch(request: Request, session: Session) -> Response:
        """Work in another account: one the user may enter now (any, for the operator)."""
        form = await request.form()
        raw = _text(form, "account_id").strip()
        account_id = int(raw) if raw.isdigit() and len(raw) < 19 else 0
        who = session.who

        def check(conn: sa.Connection) -> str:
            user = people.get_user(conn, who.user_id)
            if account_id <= 0 or people.role_in(conn, user, account_id) is None:
                raise NotFoundError(f"account {raw or '(none)'} does not exist", field="account_id")
            return people.get_account(conn, account_id).name

        name = await web.read(check)
        await run_in_threadpool(web.sessions.switch, session, account_id)
        return web.redirect(request, "/", msg=f"Now working in {name}")

    async def password_form(request: Request, session: Session) -> Response:
        return web.render(request, session, "platform/password.html")

    async def password_change(request: Request, session: Session) -> Response:
        """A new password for the signed-in user; every other session of theirs ends. The current
        password is checked (argon2, slow) before any transaction and under the login rate limit, so
        guesses neither hold the database's write lock nor run unbounded."""
        form = await request.form()
        current, new = _text(form, "current"), _text(form, "new")
        who = session.who
        limited = f"password:{who.user_id}"
        wait_s = web.limiter.blocked(limited)
        if wait_s:
            problem = f"Too many attempts; wait {int(wait_s)} s."
            return web.render(request, session, "platform/password.html", 429, problem=problem)
        known = await web.read(lambda conn: people.authenticate(conn, who.email, current))
        if known is None:
            web.limiter.failed(limited)
            wrong = "The current password is wrong."
            return web.render(request, session, "platform/password.html", 400, problem=wrong)
        web.limiter.succeeded(limited)
        try:
            hashed = await run_in_threadpool(people.hash_password, new)
        except ValidationError as exc:
            return web.render(request, session, "platform/password.html", 400, problem=str(exc))

        def change(conn: sa.Connection) -> None:
            people.set_password_hash(conn, who.user_id, hashed)  # ends every session of the user
            audit.record(
                conn,
                who.actor,
                "user.password",
                account_id=None,  # the person's, not the account's they happen to work in
                target_type="user",
                target_id=who.user_id,
                now=utcnow(),
            )

        await web.write(change)
        response = web.redirect(request, "/", msg="Password changed; your other sessions have ended")
        principal = people.principal_of(who.user_id)
        token, _ = await run_in_threadpool(
            lambda: web.sessions.create(principal, account_id=who.account_id)
        )  # this browser stays signed in
        web.set_cookie(request, response, token, max_age_s=web.sessions.absolute_s)
        return response

    return [
        web.page("/account/switch", switch, methods=["POST"], role=SIGNED_IN),
        web.page("/me/password", password_form, role=SIGNED_IN),
        web.page("/me/password", password_change, methods=["POST"], role=SIGNED_IN),
    ]
