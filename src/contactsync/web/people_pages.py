"""An account's people and its history (owners): members with their roles, and the audit log.

Members go through :mod:`contactsync.tenancy.people`: adding someone new creates the user with a
one-time password, shown once on the page that answers the form and never again; removing a member
ends their sessions in the account at once; the last owner can neither leave nor be demoted (the
service says so, and the page shows it). Members are listed newest first, paged by id. The audit
page reads the account's log newest first, filtered and paged by id (an "older" link), so it stays
fast however long the log grows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.db.platform import memberships, users
from contactsync.errors import ConflictError, NotFoundError, ValidationError
from contactsync.tenancy import people
from contactsync.tenancy.audit import AuditFilter, entries
from contactsync.tenancy.roles import ROLES, parse_role
from contactsync.web import paging
from contactsync.web.app import Web
from contactsync.web.delivery_pages import parse_since
from contactsync.web.platform_pages import OWNER, form_text, utcnow
from contactsync.web.security import Session

AUDIT_PAGE = 50
FILTERS = ("actor", "action", "target_type", "since", "until")


def routes(web: Web) -> list[BaseRoute]:
    async def members_page(
        request: Request, session: Session, *, status: int = 200, added: Any = None, problem: str = ""
    ) -> Response:
        account_id = session.who.principal.account_id
        at = paging.seek(request) if request.method == "GET" else paging.Seek()

        def load(conn: sa.Connection) -> paging.Window[Any]:
            m, u = memberships.c, users.c
            mine = (
                sa.select(m.id, m.user_id, u.email, m.role, m.created_at)
                .join(users, u.id == m.user_id)
                .where(m.account_id == account_id)
            )
            return paging.window(
                lambda seek, n: conn.execute(paging.past(mine, m.id, seek, n)).all(), at, key=lambda r: r.id
            )

        found = await web.read(load)
        return web.render(
            request,
            session,
            "platform/members.html",
            status,
            members=found.rows,
            page=found,
            roles=ROLES,
            added=added,
            problem=problem,
        )

    async def members(request: Request, session: Session) -> Response:
        return await members_page(request, session)

    async def member_add(request: Request, session: Session) -> Response:
        """Add by email with a role; a new user's one-time password is in this response only."""
        form = await request.form()
        who = session.who

        def add(conn: sa.Connection) -> tuple[people.MemberOut, str | None]:
            now = utcnow()
            role = parse_role(form_text(form, "role") or "viewer")
            member, password = people.add_member(
                conn, who.principal.account_id, email=form_text(form, "email"), role=role, now=now
            )
            who.record(
                conn,
                "member.add",
                "user",
                member.user_id,
                now=now,
                email=member.email,
                role=member.role.value,
            )
            return member, password

        try:
            added = await web.write(add)
        except NotFoundError:
            raise
        except (ValidationError, ConflictError) as exc:
            return await members_page(request, session, status=400, problem=str(exc))
        return await members_page(request, session, added={"member": added[0], "password": added[1]})

    async def member_role(request: Request, session: Session) -> Response:
        user_id = int(request.path_params["user_id"])
        form = await request.form()
        who = session.who

        def change(conn: sa.Connection) -> people.MemberOut:
            role = parse_role(form_text(form, "role"))
            member = people.change_role(conn, who.principal.account_id, user_id, role)
            who.record(
                conn, "member.role", "user", user_id, now=utcnow(), email=member.email, role=member.role.value
            )
            return member

        try:
            member = await web.write(change)
        except NotFoundError:
            raise
        except (ValidationError, ConflictError) as exc:
            return web.redirect(request, "/members", err=str(exc))
        return web.redirect(request, "/members", msg=f"{member.email} is now {member.role.value}")

    async def member_remove(request: Request, session: Session) -> Response:
        user_id = int(request.path_params["user_id"])
        who = session.who

        def remove(conn: sa.Connection) -> people.MemberOut:
            member = people.remove_member(conn, who.principal.account_id, user_id)  # ends their sessions
            who.record(conn, "member.remove", "user", user_id, now=utcnow(), email=member.email)
            return member

        try:
            member = await web.write(remove)
        except NotFoundError:
            raise
        except ConflictError as exc:
            return web.redirect(request, "/members", err=str(exc))
        return web.redirect(request, "/members", msg=f"{member.email} removed; their sessions have ended")

    async def audit_log(request: Request, session: Session) -> Response:
        qp = request.query_params
        chosen = {name: qp.get(name, "").strip()[:320] for name in FILTERS}
        since = parse_since(chosen["since"]) if chosen["since"] else None
        until = parse_since(chosen["until"]) if chosen["until"] else None
        if until is not None and len(chosen["until"]) <= len("YYYY-MM-DD"):
            until += timedelta(days=1)  # a date alone means up to the end of that day
        raw = qp.get("before", "")
        before = int(raw) if raw.isdigit() and len(raw) < 19 else None
        where = AuditFilter(
            account_id=session.who.principal.account_id,
            actor=chosen["actor"],
            action=chosen["action"][:64],
            target_type=chosen["target_type"][:32],
            since=since,
            until=until,
        )
        found = await web.read(lambda conn: entries(conn, where, before_id=before, limit=AUDIT_PAGE + 1))
        shown = list(found[:AUDIT_PAGE])
        filters = {k: v for k, v in chosen.items() if v}
        older = urlencode({**filters, "before": shown[-1].id}) if len(found) > AUDIT_PAGE else None
        return web.render(
            request,
            session,
            "platform/audit.html",
            rows=shown,
            chosen=chosen,
            older=older,
            newest=before,
            filtered=urlencode(filters),
        )

    return [
        web.page("/members", members, role=OWNER),
        web.page("/members", member_add, methods=["POST"], role=OWNER),
        web.page("/members/{user_id:int}/role", member_role, methods=["POST"], role=OWNER),
        web.page("/members/{user_id:int}/remove", member_remove, methods=["POST"], role=OWNER),
        web.page("/audit", audit_log, role=OWNER),
    ]
