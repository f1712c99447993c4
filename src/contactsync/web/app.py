"""The admin UI app factory: one Starlette app per side, mounted by the platform and listener apps.

``create_web_app(settings, engine=..., side="platform"|"listener")`` returns an ASGI app whose links
are relative to wherever it is mounted (``root_path``). Every page but the login form needs a
signed session; every POST needs the session's CSRF token; every response carries a strict
Content-Security-Policy (scripts and styles only from our own ``static/``), so a contact value that
contains markup is inert twice over: Jinja2 escapes it, and the browser would refuse to run it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import sqlalchemy as sa
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contactsync import __version__
from contactsync.db.listener import admin_sessions as listener_sessions
from contactsync.db.platform import admin_sessions as platform_sessions
from contactsync.settings import Settings
from contactsync.web.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    LoginLimiter,
    PasswordCheck,
    Session,
    SessionCodec,
    csrf_ok,
)
from contactsync.web.sessions import SessionStore, password_tag

HERE = Path(__file__).parent
Side = Literal["platform", "listener"]
T = TypeVar("T")
Handler = Callable[[Request, Session], Awaitable[Response]]

SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass
class Web:
    """Everything a page handler needs; built once per app by :func:`create_web_app`."""

    settings: Settings
    engine: sa.Engine
    side: Side
    codec: SessionCodec
    password: PasswordCheck
    limiter: LoginLimiter
    env: Environment
    clock_s: Callable[[], float]
    sessions: SessionStore
    secure_cookies: bool
    """Cookies are ``Secure`` when the public base URL is https, whatever scheme reached uvicorn."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Side-specific collaborators (platform: ``runtime``, ``on_enqueue``, ``net_policy``)."""

    @property
    def cookie_name(self) -> str:
        return f"contactsync_{self.side}_session"

    # --- database --------------------------------------------------------------------------------

    async def read(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn`` on a connection in a worker thread (pages never block the event loop)."""

        def work() -> T:
            with self.engine.connect() as conn:
                return fn(conn)

        return await run_in_threadpool(work)

    async def write(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn`` in one committed transaction in a worker thread."""

        def work() -> T:
            with self.engine.begin() as conn:
                return fn(conn)

        return await run_in_threadpool(work)

    # --- responses -------------------------------------------------------------------------------

    def render(
        self, request: Request, session: Session | None, name: str, status: int = 200, **ctx: Any
    ) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        page = self.env.get_template(name).render(
            request=request,
            base=base,
            side=self.side,
            csrf=session.csrf if session else "",
            csrf_field=CSRF_FIELD,
            authenticated=bool(session and session.authenticated),
            version=__version__,
            flash=request.query_params.get("msg", ""),
            error=request.query_params.get("err", ""),
            **ctx,
        )
        # Stored requests are shown as they came: text that is not Unicode (a lone surrogate kept
        # from an older version, say) is shown as its escape instead of failing the whole page.
        response = HTMLResponse(page.encode("utf-8", "backslashreplace"), status)
        if session is not None and not session.id:  # a visitor's signed cookie (its CSRF token)
            self.set_cookie(request, response, self.codec.dump(session), max_age_s=self.codec.max_age_s)
        response.headers["cache-control"] = "no-store"
        return response

    def set_cookie(self, request: Request, response: Response, value: str, *, max_age_s: float) -> None:
        response.set_cookie(
            self.cookie_name,
            value,
            max_age=int(max_age_s),
            path=request.scope.get("root_path", "") or "/",
            httponly=True,
            samesite="lax",
            secure=self.secure_cookies or request.url.scheme == "https",
        )

    @staticmethod
    def redirect(request: Request, path: str, *, msg: str = "", err: str = "") -> RedirectResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        url = base + path
        note = f"msg={quote(msg)}" if msg else f"err={quote(err)}" if err else ""
        if note:
            url += ("&" if "?" in url else "?") + note
        return RedirectResponse(url, status_code=303)

    async def session_of(self, request: Request) -> Session | None:
        """The signed-in session (server-side) or the visitor's signed one; ``None`` if neither."""
        cookie = request.cookies.get(self.cookie_name)
        if not cookie:
            return None
        if "." not in cookie:  # a session token (random, URL-safe base64: never a dot)
            return await run_in_threadpool(self.sessions.load, cookie)
        visitor = self.codec.load(cookie)
        return visitor if visitor is not None and not visitor.authenticated else None

    # --- routing ---------------------------------------------------------------------------------

    def page(self, path: str, handler: Handler, *, methods: Sequence[str] = ("GET",)) -> Route:
        """A route that needs a logged-in session, and the CSRF token on anything but GET."""

        async def endpoint(request: Request) -> Response:
            session = await self.session_of(request)
            if session is None or not session.authenticated:
                if request.method == "GET" and not path.startswith("/ui/"):
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return self.redirect(request, f"/login?next={quote(target)}")
                return JSONResponse({"error": "login_required"}, 401)
            if request.method != "GET" and not await _csrf_in(request, session):
                return forbidden(request)
            return await handler(request, session)

        return Route(path, endpoint, methods=list(methods))


async def _csrf_in(request: Request, session: Session) -> bool:
    offered = request.headers.get(CSRF_HEADER)
    if offered is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        offered = value if isinstance(value, str) else None
    return csrf_ok(session, offered)


def forbidden(request: Request) -> Response:
    if request.headers.get(CSRF_HEADER) is not None or "json" in request.headers.get("accept", ""):
        return JSONResponse({"error": "csrf", "detail": "missing or wrong CSRF token"}, 403)
    return HTMLResponse("<h1>403 Forbidden</h1><p>Missing or wrong CSRF token. Reload the page.</p>", 403)


def _safe_next(target: str) -> str:
    """Only same-app paths: never redirect a login to another host."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _auth_routes(web: Web) -> list[BaseRoute]:
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
        password = form.get("password")
        ok = isinstance(password, str) and await run_in_threadpool(web.password.verify, password)
        if not ok:
            web.limiter.failed(client)
            return web.render(
                request, session, "login.html", 401, next=form.get("next", ""), problem="Wrong password."
            )
        web.limiter.succeeded(client)
        target = form.get("next")
        base = request.scope.get("root_path", "").rstrip("/")
        dest = _safe_next(target if isinstance(target, str) and target else base + "/")
        response = RedirectResponse(dest, status_code=303)
        token, _ = await run_in_threadpool(web.sessions.create, "admin")
        web.set_cookie(request, response, token, max_age_s=web.sessions.absolute_s)
        return response

    async def logout(request: Request, session: Session) -> Response:
        await run_in_threadpool(web.sessions.end, session)  # a copy of the cookie stops working too
        response = web.redirect(request, "/login")
        visitor = web.codec.new()
        web.set_cookie(request, response, web.codec.dump(visitor), max_age_s=web.codec.max_age_s)
        return response

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        web.page("/logout", logout, methods=["POST"]),
    ]


def create_web_app(
    settings: Settings,
    *,
    engine: sa.Engine,
    side: Side = "platform",
    clock_s: Callable[[], float] = time.time,
    **extras: Any,
) -> ASGIApp:
    """The admin UI of ``side`` over ``engine`` (the platform or the listener database).

    Platform extras: ``runtime`` (:class:`~contactsync.automation.runtime.Runtime`), ``on_enqueue``
    (called after retries/recoveries so an in-process dispatcher claims at once) and ``net_policy``
    (for test sends). Raises :class:`~contactsync.errors.ConfigError` without an admin password.
    """
    env = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    from contactsync.web import filters

    filters.install(env)
    public_url = settings.public_base_url if side == "platform" else settings.listener_public_base_url
    web = Web(
        settings=settings,
        engine=engine,
        side=side,
        codec=SessionCodec(settings.session_secret, purpose=side, clock_s=clock_s),
        password=PasswordCheck(settings.admin_password),
        limiter=LoginLimiter(clock_s=clock_s),
        env=env,
        clock_s=clock_s,
        sessions=SessionStore(
            engine=engine,
            table=platform_sessions if side == "platform" else listener_sessions,
            clock_s=clock_s,
            idle_s=settings.session_idle_timeout_s,
            absolute_s=settings.session_absolute_timeout_s,
            password_tag=password_tag(settings.admin_password),
        ),
        secure_cookies=public_url.startswith("https://"),
        extras=dict(extras),
    )
    routes: list[BaseRoute] = [Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")]
    routes += _auth_routes(web)
    if side == "platform":
        from contactsync.web import automation_pages, delivery_pages, platform_pages

        routes += platform_pages.routes(web) + automation_pages.routes(web) + delivery_pages.routes(web)
    else:
        from contactsync.web import listener_pages

        routes += listener_pages.routes(web)
    app = Starlette(routes=routes)
    app.state.web = web
    return SecurityHeaders(app)


def create_listener_web_app(settings: Settings, *, clock_s: Callable[[], float] = time.time) -> ASGIApp:
    """The listener's admin UI over its own engines (inbox database, and the projection's if separate)."""
    from contactsync.db.engine import create_engine

    extras: dict[str, Any] = {}
    if settings.listener_projection_url:
        extras["projection_engine"] = create_engine(settings.listener_projection_url)
    engine = create_engine(settings.listener_database_url)
    return create_web_app(settings, engine=engine, side="listener", clock_s=clock_s, **extras)
