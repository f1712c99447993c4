"""Tell an account's owners by e-mail when one of their endpoints stops receiving.

An endpoint that answered 410 Gone, was disabled after days of failures, or has been failing for a
day makes the account's owners an e-mail (SMTP, from settings). What was told is itself an
``endpoint_events`` row (kind ``notified``), so each disablement and each failure streak is told
once, whichever dispatcher notices it, and the owners' notification history sits beside the events.
Nothing is sent when no SMTP host is configured.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

import sqlalchemy as sa

from contactsync.db.platform import accounts, endpoint_events, endpoints, memberships, users
from contactsync.delivery import endpoints as endpoint_rows
from contactsync.errors import DeliveryError

log = logging.getLogger("contactsync.delivery.notify")

NOTIFIED = "notified"
TOLD_ABOUT = ("gone", "auto_disabled")
"""Disablements an owner did not make themselves (their own ``disabled`` is not told back to them)."""
FAILING_FOR = timedelta(days=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Mailer:
    """Where and how to send (``CONTACTSYNC_SMTP_*``)."""

    host: str
    port: int = 25
    sender: str = "contactsync@localhost"
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: object) -> Mailer | None:
        host = str(getattr(settings, "smtp_host", ""))
        if not host:
            return None
        return cls(
            host=host,
            port=int(getattr(settings, "smtp_port", 25)),
            sender=str(getattr(settings, "smtp_from", "contactsync@localhost")),
            username=str(getattr(settings, "smtp_username", "")),
            password=str(getattr(settings, "smtp_password", "")),
            starttls=bool(getattr(settings, "smtp_starttls", False)),
        )

    def send(self, to: list[str], subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, ", ".join(to), subject
        message.set_content(body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"cannot send e-mail through {self.host}:{self.port}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Notice:
    key: endpoint_rows.EndpointKey
    account: str
    subject: str
    body: str


def _last_notified(conn: sa.Connection, key: endpoint_rows.EndpointKey) -> datetime | None:
    ev = endpoint_events.c
    return conn.execute(
        sa.select(sa.func.max(ev.created_at)).where(
            ev.account_id == key.account_id, ev.endpoint == key.endpoint, ev.kind == NOTIFIED
        )
    ).scalar()


def due(conn: sa.Connection, *, now: datetime, failing_for: timedelta = FAILING_FOR) -> list[Notice]:
    """What owners have not been told yet: disablements since their last notice, and failure streaks
    older than ``failing_for`` that began after it."""
    e, ev, a = endpoints.c, endpoint_events.c, accounts.c
    found: list[Notice] = []
    rows = conn.execute(
        sa.select(e.account_id, e.endpoint, e.disabled_at, e.disabled_reason, e.failing_since, a.name)
        .join(accounts, a.id == e.account_id)
        .where(sa.or_(e.disabled_at.is_not(None), e.failing_since <= now - failing_for))
        .order_by(e.account_id, e.endpoint)
    ).all()
    for row in rows:
        key = endpoint_rows.EndpointKey(row.account_id, row.endpoint)
        told = _last_notified(conn, key)
        if row.disabled_at is not None:
            kind = conn.execute(
                sa.select(ev.kind)
                .where(ev.account_id == key.account_id, ev.endpoint == key.endpoint, ev.kind != NOTIFIED)
                .order_by(ev.created_at.desc(), ev.id.desc())
                .limit(1)
            ).scalar()
            if kind in TOLD_ABOUT and (told is None or told < row.disabled_at):
                subject = f"[contactsync] {row.endpoint} is disabled: deliveries are waiting"
                body = (
                    f"Account: {row.name}\nEndpoint: {row.endpoint}\n"
                    f"Disabled: {row.disabled_at:%Y-%m-%d %H:%M} UTC\n"
                    f"Why: {row.disabled_reason}\n\nDeliveries to it wait; none is lost. Fix the receiver, "
                    "then enable the endpoint (admin UI, Endpoints; or POST /api/endpoints/{id}/enable)."
                )
                found.append(Notice(key, row.name, subject, body))
        elif row.failing_since is not None and (told is None or told < row.failing_since):
            hours = (now - row.failing_since).total_seconds() / 3600
            subject = f"[contactsync] {row.endpoint} has been failing for {hours:.0f} hours"
            body = (
                f"Account: {row.name}\nEndpoint: {row.endpoint}\nNo successful delivery since "
                f"{row.failing_since:%Y-%m-%d %H:%M} UTC.\n\nDeliveries are retried; after five days of "
                "failures the endpoint is disabled and they wait. The delivery pages show each attempt's "
                "answer."
            )
            found.append(Notice(key, row.name, subject, body))
    return found


def owners(conn: sa.Connection, account_id: int) -> list[str]:
    """E-mail addresses of the account's owners who may still sign in."""
    m, u = memberships.c, users.c
    return list(
        conn.execute(
            sa.select(u.email)
            .join(memberships, m.user_id == u.id)
            .where(m.account_id == account_id, m.role == "owner", u.disabled_at.is_(None))
            .order_by(u.email)
        ).scalars()
    )


def notify(engine: sa.Engine, mailer: Mailer, *, now: datetime, failing_for: timedelta = FAILING_FOR) -> int:
    """Send what is due, each notice recorded in the transaction that found it; how many were sent.

    A notice is recorded only after its e-mail went out, so a mail server that is down means the
    owners are told on a later pass, not never.
    """
    with engine.connect() as conn:
        notices = [(n, owners(conn, n.key.account_id)) for n in due(conn, now=now, failing_for=failing_for)]
    sent = 0
    for notice, to in notices:
        if to:
            try:
                mailer.send(to, notice.subject, notice.body)
            except DeliveryError as exc:
                log.warning("%s", exc)
                continue
        with engine.begin() as conn:
            who = ", ".join(to) if to else "nobody: the account has no owner who can sign in"
            endpoint_rows.add_event(
                conn, notice.key, kind=NOTIFIED, message=f"{notice.subject} — told {who}", now=now
            )
        sent += bool(to)
    return sent
