"""The admin UI app factory: one Starlette app per side, mounted on the platform and listener apps by
``contactsync.servers``.

``create_web_app(settings, engine=..., side="platform"|"listener")`` returns an ASGI app whose links
are relative to wherever it is mounted (``root_path``). Every page but the login form needs a
signed session; every POST needs the session's CSRF token; every response carries a strict
Content-Security-Policy (scripts and styles only from our own ``static/``), so a contact value that
contains markup is inert twice over: Jinja2 escapes it, and the browser would refuse to run it.

On the platform, people sign in as users and work in one account at a time; every page declares
what it needs (:data:`~contactsync.web.identity.NEEDS`), which :class:`Page` keeps for the role
matrix test, and an id of another account answers 404 exactly like a missing one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
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
from contactsync.automation.runtime import Runtime
from contactsync.db.listener import admin_sessions as listener_sessions
from contactsync.db.platform import admin_sessions as platform_sessions
from contactsync.delivery.netguard import NetPolicy
from contactsync.errors import ConfigError, NotFoundError
from contactsync.listener.secrets import SecretBook
from contactsync.settings import Settings
from contactsync.tenancy.roles import OPERATOR
from contactsync.web.identity import NEEDS, identify
from contactsync.web.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    LoginLimiter,
    PasswordCheck,
    Session,
    SessionCodec,
    csrf_ok,
)
from contactsync.web.sessions import USERS_TAG, SessionStore, password_tag

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


class Page(Route):
    """A page or form of the admin UI: needs a signed-in session, and on the platform ``role``
    (one of :data:`~contactsync.web.identity.NEEDS`), which tests read from the route table."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, methods: Sequence[str], role: str | None):
        super().__init__(path, endpoint, methods=list(methods))
        self.role = role


class RunStarter(Protocol):
    """Starts processing a manual run in this process (the API app's run threads)."""

    def ensure(self, run_id: int) -> None: ...


@dataclass
class Wiring:
    """What a face hands the admin UI beyond settings and engine, each optional.

    Platform: ``runtime`` (made once from the settings when absent), ``on_enqueue`` (an in-process
    dispatcher claims at once after retries and recoveries), ``net_policy`` (test sends), and
    ``run_workers`` (run whole-list runs in the API process). Listener: ``secret_book`` (its in-process
    keys, reloaded after each change), ``projection_engine`` (when the projection has its own
    database) and ``owned_engines`` (closed with the app).
    """

    runtime: Runtime | None = None
    on_enqueue: Callable[[], None] | None = None
    net_policy: NetPolicy | None = None
    run_workers: RunStarter | None = None
    secret_book: SecretBook | None = None
    projection_engine: sa.Engine | None = None
    owned_engines: list[sa.Engine] = field(default_factory=list)


@dataclass
class Web:
    """Everything a page handler needs; built once per app by :func:`create_web_app`."""

    settings: Settings
    engine: sa.Engine
    side: Side
    codec: SessionCodec
    password: PasswordCheck | None
    """The listener's admin password (the platform signs users in instead)."""
    limiter: LoginLimiter
    env: Environment
    clock_s: Callable[[], float]
    sessions: SessionStore
    secure_cookies: bool
    """Cookies are ``Secure`` when the public base URL is https, whatever scheme reached uvicorn."""
    wiring: Wiring = field(default_factory=lambda: Wiring())
    """The collaborators the app was built with (the platform's or the listener's)."""
    pages: list[Page] = field(default_factory=list)
    """Every page and form made by :meth:`page`, with the role it needs."""

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
            me=session.identity if session is not None else None,
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

    def denied(self, request: Request, session: Session, message: str) -> Response:
        """403: the signed-in person may not do this here (HTML, or JSON for the page's scripts)."""
        if _wants_json(request):
            return JSONResponse({"ok": False, "error": "forbidden", "detail": message}, 403)
        return self.render(request, session, "forbidden.html", 403, message=message)

    def not_found(self, request: Request, session: Session, what: str) -> Response:
        """404, the same for a missing id and for another account's."""
        if _wants_json(request):
            return JSONResponse({"ok": False, "error": {"message": what}}, 404)
        return self.render(request, session, "not_found.html", 404, what=what)

    async def session_of(self, request: Request) -> Session | None:
        """The signed-in session (server-side) or the visitor's signed one; ``None`` if neither.

        On the platform a signed-in session also carries who it is now; one whose person may no
        longer work where it points (removed, suspended, disabled) ends here and counts as none.
        """
        cookie = request.cookies.get(self.cookie_name)
        if not cookie:
            return None
        if "." not in cookie:  # a session token (random, URL-safe base64: never a dot)
            return await run_in_threadpool(self._signed_in, cookie)
        visitor = self.codec.load(cookie)
        return visitor if visitor is not None and not visitor.authenticated else None

    def _signed_in(self, token: str) -> Session | None:
        session = self.sessions.load(token)
        if session is None or self.side != "platform":
            return session
        with self.engine.connect() as conn:
            who = identify(conn, session.user, session.account_id)
        if who is None:
            self.sessions.end(session)
            return None
        return replace(session, identity=who)

    # --- routing ---------------------------------------------------------------------------------

    def page(
        self, path: str, handler: Handler, *, methods: Sequence[str] = ("GET",), role: str | None = None
    ) -> Page:
        """A route that needs a logged-in session, the CSRF token on anything but GET, and on the
        platform the ``role`` it declares (every platform page declares one)."""
        if self.side == "platform" and role not in NEEDS:
            raise ConfigError(f"platform page {path} must declare the role it needs, one of {NEEDS}")

        async def endpoint(request: Request) -> Response:
            try:
                return await guarded(request)
            finally:
                await request.close()  # an uploaded file's spooled copy, however the request ended

        async def guarded(request: Request) -> Response:
            session = await self.session_of(request)
            if session is None or not session.authenticated:
                if request.method == "GET" and not path.startswith("/ui/"):
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return self.redirect(request, f"/login?next={quote(target)}")
                return JSONResponse({"error": "login_required"}, 401)
            if request.method != "GET" and not await _csrf_in(request, session):
                return forbidden(request)
            if role is not None:
                refused = self._authorize(request, session, role)
                if refused is not None:
                    return refused
            try:
                return await handler(request, session)
            except NotFoundError as exc:  # a missing id, or another account's
                return self.not_found(request, session, str(exc))

        route = Page(path, endpoint, methods=methods, role=role)
        self.pages.append(route)
        return route

    def _authorize(self, request: Request, session: Session, needed: str) -> Response | None:
        who = session.who
        if who.may(needed):
            return None
        if needed == OPERATOR:
            return self.denied(request, session, "This page is for the installation's operator.")
        if who.account_id is None:  # the operator, outside every account
            if request.method == "GET" and not _wants_json(request):
                return self.redirect(request, "/operator")
            return self.denied(request, session, "Choose an account first (the switcher at the top).")
        return self.denied(request, session, f"Your role in {who.account_name} is {who.role}; ask an owner.")


async def _csrf_in(request: Request, session: Session) -> bool:
    offered = request.headers.get(CSRF_HEADER)
    if offered is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        offered = value if isinstance(value, str) else None
    return csrf_ok(session, offered)


def _wants_json(request: Request) -> bool:
    """Calls of the page's scripts (``/ui/``, the CSRF header, ``Accept: json``) get JSON answers."""
    path, root = request.scope["path"], request.scope.get("root_path", "")
    inside = path[len(root) :] if root and path.startswith(root) else path  # below the mount point
    return (
        inside.startswith("/ui/")
        or request.headers.get(CSRF_HEADER) is not None
        or "json" in request.headers.get("accept", "")
    )


def forbidden(request: Request) -> Response:
    if request.headers.get(CSRF_HEADER) is not None or "json" in request.headers.get("accept", ""):
        return JSONResponse({"error": "csrf", "detail": "missing or wrong CSRF token"}, 403)
    return HTMLResponse("<h1>403 Forbidden</h1><p>Missing or wrong CSRF token. Reload the page.</p>", 403)


def page_table(app: ASGIApp) -> list[Page]:
    """Every :class:`Page` of the admin UI in ``app`` (the UI itself, or an app it is mounted on)."""
    found: list[Page] = []
    inner = app.app if isinstance(app, SecurityHeaders) else app
    for route in getattr(inner, "routes", []):
        if isinstance(route, Page):
            found.append(route)
        elif isinstance(route, Mount) and route.app is not None:
            found += page_table(route.app)
    return found


def create_web_app(
    settings: Settings,
    *,
    engine: sa.Engine,
    side: Side = "platform",
    clock_s: Callable[[], float] = time.time,
    runtime: Runtime | None = None,
    on_enqueue: Callable[[], None] | None = None,
    net_policy: NetPolicy | None = None,
    run_workers: RunStarter | None = None,
    secret_book: SecretBook | None = None,
    projection_engine: sa.Engine | None = None,
    owned_engines: Sequence[sa.Engine] = (),
) -> ASGIApp:
    """The admin UI of ``side`` over ``engine`` (the platform or the listener database), with the
    collaborators :class:`Wiring` describes. People sign in to the platform's UI as users
    (``CONTACTSYNC_ADMIN_PASSWORD`` bootstraps the operator, see ``contactsync.servers``); the listener's UI
    raises :class:`~contactsync.errors.ConfigError` without an admin password.
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
        password=PasswordCheck(settings.admin_password) if side == "listener" else None,
        limiter=LoginLimiter(clock_s=clock_s),
        env=env,
        clock_s=clock_s,
        sessions=SessionStore(
            engine=engine,
            table=platform_sessions if side == "platform" else listener_sessions,
            clock_s=clock_s,
            idle_s=settings.session_idle_timeout_s,
            absolute_s=settings.session_absolute_timeout_s,
            password_tag=USERS_TAG if side == "platform" else password_tag(settings.admin_password),
        ),
        secure_cookies=public_url.startswith("https://"),
        wiring=Wiring(
            runtime=runtime,
            on_enqueue=on_enqueue,
            net_policy=net_policy,
            run_workers=run_workers,
            secret_book=secret_book,
            projection_engine=projection_engine,
            owned_engines=list(owned_engines),
        ),
    )
    routes: list[BaseRoute] = [Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")]
    from contactsync.web import auth

    routes += auth.routes(web)
    if side == "platform":
        from contactsync.web import (
            automation_pages,
            contact_pages,
            delivery_pages,
            endpoint_pages,
            import_pages,
            list_pages,
            operator_pages,
            people_pages,
            platform_pages,
            run_pages,
        )

        for module in (platform_pages, automation_pages, delivery_pages, people_pages, operator_pages):
            routes += module.routes(web)
        for module in (contact_pages, list_pages, run_pages, endpoint_pages, import_pages):
            routes += module.routes(web)
    else:
        from contactsync.web import listener_pages, listener_secret_pages

        routes += listener_pages.routes(web)
        routes += listener_secret_pages.routes(web)
    app = Starlette(routes=routes)
    app.state.web = web
    return SecurityHeaders(app)


def create_listener_web_app(
    settings: Settings,
    *,
    clock_s: Callable[[], float] = time.time,
    secret_book: SecretBook | None = None,
) -> ASGIApp:
    """The listener's admin UI over its own engines (inbox database, and the projection's if separate);
    ``secret_book``: the listener's in-process keys, reloaded after each change."""
    from contactsync.db.engine import create_engine

    projection = create_engine(settings.listener_projection_url) if settings.listener_projection_url else None
    engine = create_engine(settings.listener_database_url)
    return create_web_app(
        settings,
        engine=engine,
        side="listener",
        clock_s=clock_s,
        secret_book=secret_book,
        projection_engine=projection,
        owned_engines=[engine, *([projection] if projection is not None else [])],
    )


def close_web_app(app: ASGIApp) -> None:
    """Close the connection pools a UI app opened itself (:func:`create_listener_web_app`'s), when the
    app it is mounted on shuts down."""
    inner = app.app if isinstance(app, SecurityHeaders) else app
    web = getattr(getattr(inner, "state", None), "web", None)
    for engine in web.wiring.owned_engines if isinstance(web, Web) else []:
        engine.dispose()
