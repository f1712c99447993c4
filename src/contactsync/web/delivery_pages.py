"""Delivery pages: the outbox filtered by state/action/contact, a delivery with its attempts, retry, recover.

The list is paged by id ("older" carries the last id shown), so a deep page reads one page of an index;
a state's page reads the account's (state, endpoint) ranges of its own index, one per endpoint.

State changes go through :mod:`contactsync.delivery.interventions` (``replay``, ``recover_since``,
``cancel``); after one, the in-process dispatcher (if any) is woken so the operator sees it move.
Only the signed-in user's account's deliveries are listed or touched; each change is audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.api.deps import account_automations, delivery_owned, own_action, own_delivery
from contactsync.automation.action_settings import stored_label
from contactsync.db import sealing
from contactsync.db.counting import Count, capped, matching
from contactsync.db.platform import (
    DELIVERY_STATES,
    RETRYING,
    actions,
    automations,
    contacts,
    deliveries,
    delivery_attempts,
)
from contactsync.delivery import interventions
from contactsync.delivery.trouble import RETRYING_STATE
from contactsync.web import paging
from contactsync.web.app import Web
from contactsync.web.confirm import Ask, ask, confirmed
from contactsync.web.paging import Window
from contactsync.web.platform_pages import EDITOR, VIEWER, form_text, utcnow
from contactsync.web.security import Session

MAX_ENDPOINTS = 100


def _int(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() and len(text.strip()) < 19 else None


def parse_since(text: str) -> datetime | None:
    """``YYYY-MM-DD[ HH:MM[:SS]]`` or ISO 8601 (as an HTML datetime-local input sends it), read as UTC."""
    text = text.strip().replace("T", " ")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def endpoints_in(conn: sa.Connection, account_id: int, state: str) -> list[str] | None:
    """The endpoints an account has deliveries in ``state`` for, one seek each in the (account_id,
    state, endpoint, id) index (None past :data:`MAX_ENDPOINTS`): a state's page then reads one range
    of that index per endpoint, in id order, however big other accounts or other states are."""
    d = deliveries.c
    found: list[str] = []
    while len(found) <= MAX_ENDPOINTS:
        after = d.endpoint > found[-1] if found else sa.true()
        name = conn.execute(
            sa.select(sa.func.min(d.endpoint)).where(d.account_id == account_id, d.state == state, after)
        ).scalar()
        if name is None:
            return found
        found.append(name)
    return None


def emails_of(conn: sa.Connection, contact_ids: Sequence[int | None]) -> dict[int, str]:
    """The email of each contact a page shows (deleted contacts: none)."""
    ids = sorted({i for i in contact_ids if i is not None})
    if not ids:
        return {}
    return dict(conn.execute(sa.select(contacts.c.id, contacts.c.email).where(contacts.c.id.in_(ids))).all())


def _names(conn: sa.Connection, row: Any) -> dict[str, str]:
    """The automation, action and contact of one delivery, in words."""
    automation = conn.execute(
        sa.select(automations.c.name).where(automations.c.id == row.automation_id)
    ).scalar()
    settings = conn.execute(sa.select(actions.c.settings).where(actions.c.id == row.action_id)).scalar()
    label = stored_label(settings, row.action_id)
    return {
        "automation": automation or "",
        "action": label if row.action_id else "",
        "email": emails_of(conn, [row.contact_id]).get(row.contact_id, "") if row.contact_id else "",
    }


def _named(row: Any) -> dict[str, Any]:
    """An action of the account's with the words a person knows it by."""
    return {"id": row.id, "automation": row.name, "label": stored_label(row.settings, row.id)}


def routes(web: Web) -> list[BaseRoute]:
    def wake() -> None:
        if web.wiring.on_enqueue is not None:
            web.wiring.on_enqueue()

    async def index(request: Request, session: Session) -> Response:
        """Newest first, by state, action, contact or automation; paged by id, never by offset."""
        qp = request.query_params
        state = qp.get("state", "")
        state = state if state in DELIVERY_STATES or state == RETRYING_STATE else ""
        action_id = _int(qp.get("action"))
        contact_id = _int(qp.get("contact"))
        automation_id = _int(qp.get("automation"))
        at = paging.seek(request)
        account_id = session.who.principal.account_id

        def load(conn: sa.Connection) -> tuple[Window[Any], list[Any], dict[int, str]]:
            d = deliveries.c
            query = sa.select(
                d.id, d.transactionid, d.state, d.method, d.url, d.action_id, d.contact_id,
                d.attempt_count, d.last_status, d.last_error, d.created_at, d.next_attempt_at,
                d.render_pending,
            ).where(delivery_owned(account_id))  # fmt: skip
            if state == RETRYING_STATE:
                query = query.where(RETRYING)
            for column, value in (
                (d.state, state if state in DELIVERY_STATES else None),
                (d.action_id, action_id),
                (d.contact_id, contact_id),
                (d.automation_id, automation_id),
            ):
                if value is not None:
                    query = query.where(column == value)
            params = {"state": state, "action": action_id, "contact": contact_id, "automation": automation_id}
            spread = None
            if state in DELIVERY_STATES and contact_id is None:
                spread = endpoints_in(conn, account_id, state)

            def fetch(seek: paging.Seek, n: int) -> list[Any]:
                if spread is None:
                    return list(conn.execute(paging.past(query, d.id, seek, n)).all())
                per_endpoint = [paging.past(query.where(d.endpoint == e), d.id, seek, n) for e in spread]
                return paging.nearest(paging.union(conn, per_endpoint), n, key=lambda r: r.id, at=seek)

            found = paging.window(fetch, at, key=lambda r: r.id, params=params)
            acts = conn.execute(
                sa.select(actions.c.id, automations.c.name, actions.c.settings)
                .join(automations, automations.c.id == actions.c.automation_id)
                .where(automations.c.id.in_(account_automations(account_id)))
                .order_by(actions.c.id)
            ).all()
            return found, list(acts), emails_of(conn, [r.contact_id for r in found.rows])

        found, acts, emails = await web.read(load)
        named = [_named(a) for a in acts]
        return web.render(
            request,
            session,
            "platform/deliveries.html",
            rows=found.rows,
            page=found,
            states=DELIVERY_STATES,
            state=state,
            action_id=action_id,
            contact_id=contact_id,
            automation_id=automation_id,
            actions=named,
            sent_by={a["id"]: a for a in named},
            emails=emails,
            now=utcnow(),
        )

    async def detail(request: Request, session: Session) -> Response:
        delivery_id = int(request.path_params["delivery_id"])
        caller = session.who.principal

        def load(conn: sa.Connection) -> tuple[Any, list[Any], dict[str, str]]:
            own_delivery(conn, caller, delivery_id)
            row = conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id)).one()
            attempts = conn.execute(
                sa.select(delivery_attempts)
                .where(delivery_attempts.c.delivery_id == delivery_id)
                .order_by(delivery_attempts.c.number)
            ).all()
            return row, list(attempts), _names(conn, row)

        row, attempts, names = await web.read(load)
        # frozen header values are customers' credentials, sealed at rest: never shown here
        headers = {str(k): sealing.MASK if sealing.is_sealed(str(v)) else sealing.mask(str(v))
                   for k, v in (row.headers or {}).items()}  # fmt: skip
        return web.render(
            request, session, "platform/delivery.html", d=row, headers=headers, attempts=attempts, names=names
        )

    async def retry(request: Request, session: Session) -> Response:
        delivery_id = int(request.path_params["delivery_id"])
        who = session.who

        def work(conn: sa.Connection) -> int:
            own_delivery(conn, who.principal, delivery_id)
            moved = interventions.replay(conn, [delivery_id], now=utcnow())
            if moved:
                who.record(conn, "delivery.retry", "delivery", delivery_id, now=utcnow())
            return moved

        moved = await web.write(work)
        wake()
        if not moved:
            return web.redirect(
                request,
                f"/deliveries/{delivery_id}",
                err="only retrying, failed, cancelled or delivered deliveries can be retried",
            )
        return web.redirect(request, f"/deliveries/{delivery_id}", msg="queued for a new attempt")

    async def cancel(request: Request, session: Session) -> Response:
        """Cancel after a page that says what is given up (its attempts so far, its endpoint)."""
        delivery_id = int(request.path_params["delivery_id"])
        who = session.who
        form = await request.form()
        if not confirmed(form):

            def load(conn: sa.Connection) -> Any:
                own_delivery(conn, who.principal, delivery_id)
                d = deliveries.c
                return conn.execute(
                    sa.select(d.id, d.state, d.endpoint, d.attempt_count, d.contact_id).where(
                        d.id == delivery_id
                    )
                ).one()

            row = await web.read(load)
            tried = f"after {row.attempt_count} attempt{'' if row.attempt_count == 1 else 's'}"
            question = Ask(
                title=f"Cancel delivery {delivery_id}?",
                says=(
                    f"This cancels 1 delivery to {row.endpoint} ({row.state}, {tried}): it is not "
                    "attempted again.",
                    "You can still retry it later from its page.",
                ),
                action=f"/deliveries/{delivery_id}/cancel",
                button="Cancel this delivery",
                back=f"/deliveries/{delivery_id}",
                danger=True,
            )
            return ask(web, request, session, question)

        def work(conn: sa.Connection) -> int:
            own_delivery(conn, who.principal, delivery_id)
            moved = interventions.cancel(conn, [delivery_id], now=utcnow())
            if moved:
                who.record(conn, "delivery.cancel", "delivery", delivery_id, now=utcnow())
            return moved

        moved = await web.write(work)
        note = (
            {"msg": "cancelled"} if moved else {"err": "only pending or failed deliveries can be cancelled"}
        )
        return web.redirect(request, f"/deliveries/{delivery_id}", **note)

    async def recover(request: Request, session: Session) -> Response:
        form = await request.form()
        action_id = _int(form_text(form, "action_id"))
        since = parse_since(form_text(form, "since"))
        if action_id is None or since is None:
            return web.redirect(
                request, "/deliveries", err="recover needs an action and a start time (YYYY-MM-DD HH:MM)"
            )
        who = session.who
        if not confirmed(form):

            def failed_since(conn: sa.Connection) -> Count:
                own_action(conn, who.principal, action_id, field="action_id")
                d = deliveries.c
                where = (d.action_id == action_id, d.state == "failed", d.created_at >= since)
                return capped(conn, matching(deliveries, *where, by=d.created_at))

            failed = await web.read(failed_since)
            question = Ask(
                title=f"Recover the failed deliveries of action {action_id}?",
                says=(
                    f"This re-sends {failed} failed deliver{'y' if failed == 1 else 'ies'} of action "
                    f"{action_id} created since {since:%Y-%m-%d %H:%M} (UTC), with their original "
                    "transactionids.",
                    "Each gets a fresh set of attempts at once.",
                ),
                action="/deliveries/recover",
                fields={"action_id": str(action_id), "since": f"{since:%Y-%m-%d %H:%M:%S}"},
                button=f"Re-send {failed} deliver{'y' if failed == 1 else 'ies'}",
                back=f"/deliveries?action={action_id}",
            )
            return ask(web, request, session, question)

        def work(conn: sa.Connection) -> int:
            own_action(conn, who.principal, action_id, field="action_id")
            count = interventions.recover_since(conn, action_id=action_id, since=since, now=utcnow())
            who.record(
                conn, "action.recover", "action", action_id, now=utcnow(), requeued=count, since=str(since)
            )
            return count

        count = await web.write(work)
        wake()
        return web.redirect(
            request,
            f"/deliveries?action={action_id}",
            msg=f"{count} failed deliveries of action {action_id} queued again",
        )

    return [
        web.page("/deliveries", index, role=VIEWER),
        web.page("/deliveries/recover", recover, methods=["POST"], role=EDITOR),
        web.page("/deliveries/{delivery_id:int}", detail, role=VIEWER),
        web.page("/deliveries/{delivery_id:int}/retry", retry, methods=["POST"], role=EDITOR),
        web.page("/deliveries/{delivery_id:int}/cancel", cancel, methods=["POST"], role=EDITOR),
    ]
